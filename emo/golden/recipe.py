"""Stand-in weights made from each tensor's name and shape ("sd15-recipe-v1"), and their fingerprint.

Golden cases whose json carries a `weights` block store no weights: the generator assigned every tensor of the
reference model a value derived from its name and shape alone, and recorded a fingerprint of the result. Rebuilding
the same bits here (torch only, no weight file) and checking the fingerprint proves both sides ran the same model,
names and shapes included. The rules, per tensor, for a name with its `net.` / `vae.` prefix:

- seed: the first 8 hex digits of the name's sha256, as an integer; `u = torch.rand(shape)` from a generator
  seeded with it, and `e = 2u - 1` (exact in float32);
- a motion module's positional table (leaf `pe`, shape (1, L, d)): the sinusoidal table, no randomness;
- conv / linear weights (2+ dims): `e * sqrt(3 / fan_in)`, fan_in = prod(shape[1:]) (std 1/sqrt(fan_in));
- biases: `e * 0.02 sqrt(3)` (std 0.02); 1-D norm scales (`weight` with "norm" in the name): `1 + e * 0.1 sqrt(3)`.

Each scaling is one float32 multiply (and add) by the float32-rounded constant, and torch's CPU `rand` is integer
based, so the bits are the same on every CPU.
"""
from __future__ import annotations

import hashlib
import math
from typing import Iterable

import torch

RECIPE = "sd15-recipe-v1"


def _seed(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def _positional_table(length: int, dim: int) -> torch.Tensor:
    """(1, L, d): sin at even channels, cos at odd ones, frequency exp(k * -ln(1e4) / d) for even k (float64)."""
    table = [[0.0] * dim for _ in range(length)]
    for pos in range(length):
        for k in range(0, dim, 2):
            angle = pos * math.exp(k * (-math.log(10000.0) / dim))
            table[pos][k] = math.sin(angle)
            if k + 1 < dim:
                table[pos][k + 1] = math.cos(angle)
    return torch.tensor(table, dtype=torch.float64).to(torch.float32)[None]


def _scaled(e: torch.Tensor, scale: float, offset: float = 0.0) -> torch.Tensor:
    out = e * torch.tensor(scale, dtype=torch.float32)
    return out + torch.tensor(offset, dtype=torch.float32) if offset else out


def recipe_tensor(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The float32 value of tensor `name` (prefixed `net.` or `vae.`) of this shape."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "pe":
        if len(shape) != 3 or shape[0] != 1:
            raise ValueError(f"{name}: a positional table must be (1, L, d), got {shape}")
        return _positional_table(shape[1], shape[2])
    gen = torch.Generator().manual_seed(_seed(name))
    e = torch.rand(shape, generator=gen, dtype=torch.float32) * 2 - 1
    if len(shape) >= 2:
        return _scaled(e, math.sqrt(3.0) / math.sqrt(math.prod(shape[1:])))
    if len(shape) == 1 and leaf == "bias":
        return _scaled(e, 0.02 * math.sqrt(3.0))
    if len(shape) == 1 and leaf == "weight" and "norm" in name:
        return _scaled(e, 0.1 * math.sqrt(3.0), 1.0)
    raise ValueError(f"no recipe rule for {name} of shape {shape}")


def recipe_weights(names_shapes: Iterable[tuple[str, tuple[int, ...]]], prefix: str) -> dict[str, torch.Tensor]:
    """{name: tensor}; `prefix` is part of each tensor's seed, not of the returned names."""
    return {name: recipe_tensor(prefix + name, tuple(shape)) for name, shape in names_shapes}


def fingerprint(weights: dict[str, torch.Tensor]) -> str:
    """First 16 hex digits of sha256 over, in sorted name order, "name<TAB>shape-tuple<LF>" and the float32 bytes."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        t = weights[name].detach().to(torch.float32).contiguous()
        digest.update(f"{name}\t{tuple(t.shape)}\n".encode())
        digest.update(t.numpy().data)  # native (little-endian) float32 bytes, no copy
    return digest.hexdigest()[:16]
