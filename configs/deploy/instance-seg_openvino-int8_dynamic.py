# Mask R-CNN -> OpenVINO int8, any input size and batch; the metric check covers bbox and segm mAP
# (see _base_/openvino_int8.py).
_base_ = ['./_base_/mmdet_instance_seg_dynamic.py', './_base_/openvino_int8.py']
