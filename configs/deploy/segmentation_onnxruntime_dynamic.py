# Semantic FPN -> ONNX Runtime, any input size and batch: the test pipeline's resize decides it.
_base_ = ['./_base_/mmseg_dynamic.py']
backend_config = dict(type='onnxruntime')
