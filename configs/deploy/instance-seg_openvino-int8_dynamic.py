# Mask R-CNN -> OpenVINO int8, any input size and batch; the metric check covers bbox and segm mAP
# (see _base_/openvino_int8.py).
_base_ = ['./_base_/mmdet_instance_seg_dynamic.py', './_base_/openvino_int8.py']
# The backbone stays in float: a demo-trained Mask R-CNN-M4 lost 1.1 points of segm mAP fully
# quantized and 0.7 this way, no slower (docs/deployment.md, "Mask R-CNN, checked end to end").
calib_config = dict(num_images=64, ignored_scope=dict(patterns=['.*backbone.*']))
