# Mask R-CNN -> ONNX Runtime, fixed 800x1344 input, batch 1; RoIAlign is ONNX's own RoiAlign op.
_base_ = ['./_base_/mmdet_instance_seg.py']
onnx_config = dict(input_shape=[1344, 800])
backend_config = dict(type='onnxruntime')
