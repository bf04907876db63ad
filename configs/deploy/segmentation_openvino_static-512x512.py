# Semantic FPN -> OpenVINO, fixed 512x512 input (compiled from the end-to-end ONNX, see
# detection_openvino_static-800x1344.py).
_base_ = ['./_base_/mmseg.py']
onnx_config = dict(input_shape=[512, 512])
backend_config = dict(
    type='openvino', model_inputs=[dict(opt_shapes=dict(input=[1, 3, 512, 512]))])
