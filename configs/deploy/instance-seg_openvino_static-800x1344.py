# Mask R-CNN -> OpenVINO, fixed 800x1344 input, batch 1 (see detection_openvino_static-800x1344.py).
_base_ = ['./_base_/mmdet_instance_seg.py']
onnx_config = dict(input_shape=[1344, 800])
backend_config = dict(
    type='openvino', model_inputs=[dict(opt_shapes=dict(input=[1, 3, 800, 1344]))])
