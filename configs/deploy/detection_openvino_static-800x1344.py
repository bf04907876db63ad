# Detector -> OpenVINO, fixed 800x1344 input. mmdeploy exports the ONNX; evit_mm compiles it
# with a current ``openvino`` (openvino.Core().compile_model) instead of mmdeploy's legacy
# openvino-dev Model Optimizer step.
_base_ = ['./_base_/mmdet.py']
onnx_config = dict(input_shape=[1344, 800])
backend_config = dict(
    type='openvino', model_inputs=[dict(opt_shapes=dict(input=[1, 3, 800, 1344]))])
