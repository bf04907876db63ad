# ONNX export settings shared by every deploy config (mmdeploy's format).
# ``input_shape`` is [width, height]; None means "the image's own size" (dynamic configs).
onnx_config = dict(
    type='onnx',
    export_params=True,
    keep_initializers_as_inputs=False,
    opset_version=11,
    save_file='end2end.onnx',
    input_names=['input'],
    output_names=['output'],
    input_shape=None,
    optimize=False)  # mmdeploy's graph optimizer needs its TorchScript extension (not in the wheel)
