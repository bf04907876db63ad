# Detector -> ONNX Runtime, any input size (batch 1). Boxes and labels vary in count.
_base_ = ['./_base_/mmdet.py']
onnx_config = dict(
    dynamic_axes=dict(
        input=dict({0: 'batch', 2: 'height', 3: 'width'}),
        dets=dict({0: 'batch', 1: 'num_dets'}),
        labels=dict({0: 'batch', 1: 'num_dets'})))
backend_config = dict(type='onnxruntime')
