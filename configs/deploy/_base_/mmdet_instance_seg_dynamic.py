# Instance segmentation at any input size and batch (see mmdet_dynamic.py and mmdet_instance_seg.py).
_base_ = ['./mmdet_instance_seg.py']
onnx_config = dict(
    dynamic_axes=dict(
        input=dict({0: 'batch', 2: 'height', 3: 'width'}),
        img_shape=dict({0: 'batch'}),
        dets=dict({0: 'batch', 1: 'num_dets'}),
        labels=dict({0: 'batch', 1: 'num_dets'}),
        masks=dict({0: 'batch', 1: 'num_dets'})))
