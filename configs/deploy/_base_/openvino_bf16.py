# OpenVINO bf16: the inference-precision hint bf16 on a CPU with bf16 units (AVX512-BF16 or AMX; deploy.py
# refuses a CPU that would only emulate it). As for int8, the metric on the model config's test set
# replaces the float32 parity check, with the same accepted drop.
backend_config = dict(type='openvino', precision='bf16')
evaluation_config = dict(max_drop=1.0)
