# OpenVINO int8: NNCF post-training quantization of the end-to-end model (nncf.quantize: the "mixed" preset,
# symmetric weights and asymmetric activations, with the transformer model type), calibrated on num_images
# images spread evenly over the model config's val dataloader (or over --calib-dataset-cfg's). deploy.py
# replaces the float32 parity check by the metric on the model config's test set: PyTorch's, the backend's
# and the drop, which must stay within evaluation_config.max_drop points (mAP x 100, or mIoU).
# calib_config.ignored_scope=dict(patterns=[...]) keeps matching layers in float (NNCF's IgnoredScope),
# e.g. ['.*backbone.*'] where the fully quantized model loses too much (docs/deployment.md).
backend_config = dict(type='openvino', precision='int8')
calib_config = dict(num_images=64)
evaluation_config = dict(max_drop=1.0)
