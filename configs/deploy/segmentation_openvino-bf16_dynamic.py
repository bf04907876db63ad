# Semantic FPN -> OpenVINO bf16, any input size and batch: the test pipeline's own resize (see
# _base_/openvino_bf16.py).
_base_ = ['./_base_/mmseg_dynamic.py', './_base_/openvino_bf16.py']
