"""Activation ranges of the torch modules' linear layers, for torch-fast's FP8 step (no export needed).

The same max calibration as amax.py does on the exported graphs, recorded with forward pre-hooks on every Linear
and 1x1 Conv2d while the eager model runs real steps; the hooks are removed afterwards. The result, with the
quantization policy's keep patterns, is the scales file torch-fast reads (runtime.fp8_convert.Fp8Scales).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..runtime.fp8_convert import Fp8Scales
from ..runtime.fp8_linear import quantizable
from .policy import POLICIES


def record_linear_amax(module: nn.Module, run: Callable[[], object]) -> dict[str, float]:
    """max |input| of every Linear / 1x1 Conv2d of `module` over what `run()` makes it compute."""
    amax: dict[str, float] = {}

    def hook(name: str):
        def record(_layer: nn.Module, args: tuple) -> None:
            amax[name] = max(amax.get(name, 0.0), float(args[0].detach().abs().max()))
        return record

    handles = [layer.register_forward_pre_hook(hook(name)) for name, layer in quantizable(module)]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return amax


def fp8_scales(amax: dict[str, float], policy: str = "default") -> Fp8Scales:
    p = POLICIES[policy]
    return Fp8Scales(amax, p.keep, p.per_channel_weights)
