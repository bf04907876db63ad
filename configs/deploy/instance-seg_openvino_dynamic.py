# Mask R-CNN -> OpenVINO, any input size and batch (see detection_openvino_dynamic.py).
_base_ = ['./_base_/mmdet_instance_seg_dynamic.py']
backend_config = dict(
    type='openvino', model_inputs=[dict(opt_shapes=dict(input=[1, 3, 800, 1344]))])
