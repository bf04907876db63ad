# Detector -> ONNX Runtime, any input size (batch 1): the test pipeline's resize decides it.
_base_ = ['./_base_/mmdet_dynamic.py']
backend_config = dict(type='onnxruntime')
