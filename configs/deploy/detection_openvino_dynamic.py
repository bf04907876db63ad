# Detector -> OpenVINO, any input size (batch 1), compiled from the end-to-end ONNX (see
# detection_openvino_static-800x1344.py). opt_shapes is the typical size, for mmdeploy's format.
_base_ = ['./_base_/mmdet_dynamic.py']
backend_config = dict(
    type='openvino', model_inputs=[dict(opt_shapes=dict(input=[1, 3, 800, 1344]))])
