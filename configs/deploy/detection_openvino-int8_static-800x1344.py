# RetinaNet (any detector config of ours) -> OpenVINO int8, fixed 800x1344 input (see _base_/openvino_int8.py).
_base_ = ['./_base_/mmdet.py', './_base_/openvino_int8.py']
onnx_config = dict(input_shape=[1344, 800])
