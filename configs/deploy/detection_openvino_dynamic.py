# Detector -> OpenVINO, any input size and batch, compiled from the end-to-end ONNX (see
# detection_openvino_static-800x1344.py).
# backend_config.model_inputs.opt_shapes is mmdeploy's Model Optimizer hint; evit_mm compiles the ONNX
# directly and does not use it (kept so that the file stays a valid mmdeploy OpenVINO config).
_base_ = ['./_base_/mmdet_dynamic.py']
backend_config = dict(
    type='openvino', model_inputs=[dict(opt_shapes=dict(input=[1, 3, 800, 1344]))])
