"""Attention primitives shared by every transformer in the UNets.

All attention goes through `attention()` so that fused kernels can be swapped in behind one function.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention, scale 1/sqrt(d): q (b, h, lq, d), k/v (b, h, lk, d) -> (b, h, lq, d)."""
    return F.scaled_dot_product_attention(q, k, v)


class Attention(nn.Module):
    """Multi-head attention with diffusers' parameter layout (to_q/to_k/to_v without bias, to_out with bias)."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        return x.view(b, length, self.heads, -1).transpose(1, 2)  # b l (h d) -> b h l d

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, h, length, d = x.shape
        return x.transpose(1, 2).reshape(b, length, h * d)  # b h l d -> b l (h d)

    def kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of `context` (b, l, c), split into heads: (b, h, l, d) each."""
        return self.split_heads(self.to_k(context)), self.split_heads(self.to_v(context))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        k, v = self.kv(x if context is None else context)
        return self.to_out(self.merge_heads(attention(self.split_heads(self.to_q(x)), k, v)))


class FeedForward(nn.Module):
    """GEGLU feed-forward (diffusers' FeedForward with mult 4)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.proj = nn.Linear(dim, dim * mult * 2)
        self.out = nn.Linear(dim * mult, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return self.out(h * F.gelu(gate))
