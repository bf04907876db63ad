"""End-to-end deployment: mmdeploy export, ONNX Runtime / OpenVINO runners, parity checks."""
