"""Measuring tools: speed, complexity, ONNX export and the model-zoo report."""
