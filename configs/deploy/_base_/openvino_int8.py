# OpenVINO int8: NNCF quantization of the end-to-end model (the "mixed" preset, symmetric weights and
# asymmetric activations, with the transformer model type), calibrated on num_images images spread evenly
# over the model config's val dataloader (or over --calib-dataset-cfg's).
# method='accuracy_control' (NNCF's quantize_with_accuracy_control): the quantized model is validated with
# the val split's evaluator on validation_images images, and the operations that cost the most (ranked on
# ranking_images of them) are put back in float until no main metric drops more than
# evaluation_config.max_drop points; the record lists them and the drop at each step.
# method='ptq' is plain post-training quantization (nncf.quantize).
# deploy.py then checks the metric on the model config's test set: PyTorch's, the backend's and the drop,
# which must stay within evaluation_config.max_drop points (mAP x 100, or mIoU).
# calib_config.ignored_scope=dict(patterns=[...]) keeps matching layers in float from the start (NNCF's
# IgnoredScope).
backend_config = dict(type='openvino', precision='int8')
calib_config = dict(num_images=64, method='accuracy_control', validation_images=200,
                    ranking_images=50)
evaluation_config = dict(max_drop=1.0)
