# Detector -> OpenVINO, fixed 800x1344 input. mmdeploy exports the ONNX; evit_mm compiles it
# with a current ``openvino`` (openvino.Core().compile_model) instead of mmdeploy's legacy
# openvino-dev Model Optimizer step.
# backend_config.model_inputs.opt_shapes is mmdeploy's Model Optimizer hint; evit_mm compiles the ONNX
# directly and does not use it (kept so that the file stays a valid mmdeploy OpenVINO config).
_base_ = ['./_base_/mmdet.py']
onnx_config = dict(input_shape=[1344, 800])
backend_config = dict(
    type='openvino', model_inputs=[dict(opt_shapes=dict(input=[1, 3, 800, 1344]))])
