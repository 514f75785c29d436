"""TensorRT engines from an emo-export directory: profiles from the IO specs, typing and precision, one plan per
component, the engine dir's manifest. The runtime reads what this writes and never imports it."""
