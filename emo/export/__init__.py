"""Export of every component to ONNX from its IO spec (`emo.io_spec`), graph checks and comparisons."""
