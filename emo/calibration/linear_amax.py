"""Activation ranges of the torch modules' linear layers, for torch-fast's FP8 step (no export needed).

The same max calibration as amax.py does on the exported graphs: every Linear and 1x1 Conv2d is wrapped in an
`AmaxObserver` (a module that records its input's max |x| and calls the layer) while the eager model runs real
steps, and put back afterwards. The result, with the
quantization policy's keep patterns, is the scales file torch-fast reads (runtime.fp8_convert.Fp8Scales).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..runtime.fp8_convert import Fp8Scales, replace_layer
from ..runtime.fp8_linear import quantizable
from .policy import POLICIES


class AmaxObserver(nn.Module):
    """A layer that also keeps the largest |input| it has seen (None until it runs)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer, self.amax = layer, None

    @property
    def weight(self) -> torch.Tensor:  # for model code that reads a layer's tensors (it is not observed there)
        return self.layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = float(x.detach().abs().max())
        self.amax = seen if self.amax is None else max(self.amax, seen)
        return self.layer(x)


def record_linear_amax(module: nn.Module, run: Callable[[], object]) -> dict[str, float]:
    """max |input| of every Linear / 1x1 Conv2d of `module` over what `run()` makes it compute."""
    observers = {name: AmaxObserver(layer) for name, layer in list(quantizable(module))}
    for name, observer in observers.items():
        replace_layer(module, name, observer)
    try:
        with torch.no_grad():
            run()
    finally:
        for name, observer in observers.items():
            replace_layer(module, name, observer.layer)
    return {name: o.amax for name, o in observers.items() if o.amax is not None}


def fp8_scales(amax: dict[str, float], policy: str = "default") -> Fp8Scales:
    p = POLICIES[policy]
    return Fp8Scales(amax, p.keep, p.per_channel_weights)
