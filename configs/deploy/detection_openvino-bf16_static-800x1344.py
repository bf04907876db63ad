# RetinaNet (any detector config of ours) -> OpenVINO bf16, fixed 800x1344 input (see _base_/openvino_bf16.py).
_base_ = ['./_base_/mmdet.py', './_base_/openvino_bf16.py']
onnx_config = dict(input_shape=[1344, 800])
