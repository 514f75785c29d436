"""Example inputs for a component at one operating point: used to trace exports and to compare backends."""
from __future__ import annotations

import torch

from ..io_spec import ComponentSpec

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int64": torch.int64}


def example_inputs(spec: ComponentSpec, values: dict[str, int], precision: str = "fp32", seed: int = 0
                   ) -> dict[str, torch.Tensor]:
    """Plausible random inputs in the spec's order: latents ~ N(0, 1), images and masks in range, real scalars."""
    gen = torch.Generator().manual_seed(seed)
    prec = spec.precision(precision)
    out = {}
    for t in spec.inputs:
        shape = t.resolve(values)
        dtype = _TORCH_DTYPES[t.numpy_dtype(prec)]
        if t.value_of is not None:
            x = torch.full(shape, values[t.value_of], dtype=torch.int64)
        elif t.name == "timestep":
            x = torch.full(shape, 500.0)
        elif t.name == "guidance_scale":
            x = torch.full(shape, 3.5)
        elif t.name == "motion_scale":
            x = torch.tensor([1.0, 0.9, 1.1])
        elif t.name == "ref_index":  # both entries, alternating from entry 1
            x = (torch.arange(shape[0]) + 1) % 2
        elif t.name.startswith("mask_"):
            x = torch.rand(shape, generator=gen)
        elif t.name in ("pixels", "face_region"):
            x = torch.rand(shape, generator=gen) * 2 - 1
        elif t.name == "waveform":
            x = torch.randn(shape, generator=gen) * 0.5
        else:
            x = torch.randn(shape, generator=gen)
        out[t.name] = x.to(dtype)
    return out
