# RetinaNet (any detector config of ours) -> ONNX Runtime, fixed 800x1344 input.
_base_ = ['./_base_/mmdet.py']
onnx_config = dict(input_shape=[1344, 800])
backend_config = dict(type='onnxruntime')
