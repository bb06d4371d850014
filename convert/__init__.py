"""cnnbench.convert: Keras to self-describing ONNX, verified on every export."""
