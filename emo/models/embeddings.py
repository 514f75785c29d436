"""Sinusoidal timestep embedding + MLP, as in the SD1.5 UNet."""
from __future__ import annotations

import math

import torch
from torch import nn


def timestep_features(t: torch.Tensor, dim: int, flip_sin_to_cos: bool, freq_shift: float) -> torch.Tensor:
    """t (b,) -> (b, dim) sinusoidal features (diffusers' get_timestep_embedding)."""
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - freq_shift)
    args = t[:, None].float() * torch.exp(exponent)[None]
    sin, cos = torch.sin(args), torch.cos(args)
    emb = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    def __init__(self, in_dim: int, dim: int, flip_sin_to_cos: bool, freq_shift: float):
        super().__init__()
        self.in_dim, self.flip_sin_to_cos, self.freq_shift = in_dim, flip_sin_to_cos, freq_shift
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        x = timestep_features(t, self.in_dim, self.flip_sin_to_cos, self.freq_shift).to(dtype)
        return self.linear_2(torch.nn.functional.silu(self.linear_1(x)))
