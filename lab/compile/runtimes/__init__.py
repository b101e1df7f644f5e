"""Inference runtimes: a model converted ahead of time, then run (torchscript, torch_export,
ONNX Runtime, LiteRT, TensorRT)."""
