# Mask R-CNN -> OpenVINO bf16, any input size and batch; the metric check covers bbox and segm mAP
# (see _base_/openvino_bf16.py).
_base_ = ['./_base_/mmdet_instance_seg_dynamic.py', './_base_/openvino_bf16.py']
