"""Deterministic random weights, for the demo, tests and benchmarks (no trained weights needed)."""
from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Fill every parameter from a seeded generator, none left at zero.

    Trained models zero-initialise whole paths (motion-module outputs, audio convs, face locator output); random
    weights that keep those at zero would hide them from every test.
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if p.dim() == 1 and name.endswith("weight"):  # normalisation scales
            value = 1 + 0.1 * torch.randn(p.shape, generator=g)
        elif p.dim() == 1:  # biases
            value = 0.02 * torch.randn(p.shape, generator=g)
        else:
            value = torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel())
        p.copy_(value.to(p.dtype))
    return module
