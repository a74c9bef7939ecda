"""Build-time only: ONNX export, TensorRT engines, parity checks, bundle manifests."""
