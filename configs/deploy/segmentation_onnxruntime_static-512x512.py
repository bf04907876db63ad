# Semantic FPN -> ONNX Runtime, fixed 512x512 input (ADE20K's crop size).
_base_ = ['./_base_/mmseg.py']
onnx_config = dict(input_shape=[512, 512])
backend_config = dict(type='onnxruntime')
