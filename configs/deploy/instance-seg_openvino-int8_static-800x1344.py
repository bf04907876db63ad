# Mask R-CNN -> OpenVINO int8, fixed 800x1344 input, batch 1; the metric check covers bbox and segm
# mAP (see _base_/openvino_int8.py).
_base_ = ['./_base_/mmdet_instance_seg.py', './_base_/openvino_int8.py']
onnx_config = dict(input_shape=[1344, 800])
