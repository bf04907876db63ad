# Semantic FPN -> OpenVINO int8, fixed 512x512 input (see _base_/openvino_int8.py).
_base_ = ['./_base_/mmseg.py', './_base_/openvino_int8.py']
onnx_config = dict(input_shape=[512, 512])
# labels at the decode head's resolution, upsampled by nearest neighbour (see _base_/mmseg.py)
codebase_config = dict(argmax_before_upsampling=True)
