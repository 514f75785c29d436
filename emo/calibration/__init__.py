"""INT8 / FP8 post-training quantization of an export: calibration on activations recorded while the fp32 graphs
render real inputs, Q/DQ graphs through the same IO specs and manifest, and an accuracy gate on held-out inputs."""
