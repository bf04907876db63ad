# Semantic FPN -> OpenVINO int8, any input size and batch: the test pipeline's own resize (see
# _base_/openvino_int8.py).
_base_ = ['./_base_/mmseg_dynamic.py', './_base_/openvino_int8.py']
# labels at the decode head's resolution, upsampled by nearest neighbour (see _base_/mmseg.py)
codebase_config = dict(argmax_before_upsampling=True)
