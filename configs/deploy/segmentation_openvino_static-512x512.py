# Semantic FPN -> OpenVINO, fixed 512x512 input (compiled from the end-to-end ONNX, see
# detection_openvino_static-800x1344.py).
# backend_config.model_inputs.opt_shapes is mmdeploy's Model Optimizer hint; evit_mm compiles the ONNX
# directly and does not use it (kept so that the file stays a valid mmdeploy OpenVINO config).
_base_ = ['./_base_/mmseg.py']
onnx_config = dict(input_shape=[512, 512])
backend_config = dict(
    type='openvino', model_inputs=[dict(opt_shapes=dict(input=[1, 3, 512, 512]))])
