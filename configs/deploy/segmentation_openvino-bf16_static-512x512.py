# Semantic FPN -> OpenVINO bf16, fixed 512x512 input (see _base_/openvino_bf16.py).
_base_ = ['./_base_/mmseg.py', './_base_/openvino_bf16.py']
onnx_config = dict(input_shape=[512, 512])
