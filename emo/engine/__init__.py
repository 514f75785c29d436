"""TensorRT plans from an ONNX export directory: profiles from the IO specs, typing and precision, one plan per
component, the plan directory's manifest. The runtime reads what this writes (through `emo.tensorrt.plan_dir`)
and never imports it."""
