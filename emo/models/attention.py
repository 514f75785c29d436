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
    """Multi-head attention with diffusers' parameter layout (to_q/to_k/to_v without bias, to_out with bias).

    fuse_qkv() makes self-attention compute q, k and v in one GEMM: the three weights concatenated once, kept
    outside the parameters (state_dict and its names are unchanged)."""

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

    def fuse_qkv(self) -> bool:
        """Concatenate to_q/to_k/to_v's weights (3·inner, c) for self-attention; call it once the weights are on
        their final device and dtype (a later cast or reload leaves the fused copy stale: call it again). FP8
        projections (torch-fast's) fuse into one FP8 layer when they share their input scale, as self-attention's
        do. False, and nothing fused, where the projections are other layers or k/v take another width."""
        self.__dict__.pop("_qkv_weight", None)
        self.__dict__.pop("_qkv_fp8", None)
        layers = (self.to_q, self.to_k, self.to_v)
        if self.to_k.in_features != self.to_q.in_features:
            return False
        if all(type(m) is nn.Linear for m in layers):
            with torch.no_grad():
                self.__dict__["_qkv_weight"] = torch.cat([m.weight for m in layers])
            return True
        concatenated = getattr(type(self.to_q), "concatenated", None)  # FP8 layers (runtime.fp8_linear) have it
        if concatenated is None:
            return False
        try:
            self.__dict__["_qkv_fp8"] = concatenated(layers)
        except ValueError:
            return False
        return True

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of self-attention on x (b, l, c), split into heads: (b, h, l, d) each."""
        fused, fp8 = self.__dict__.get("_qkv_weight"), self.__dict__.get("_qkv_fp8")
        if fused is None and fp8 is None:
            return self.split_heads(self.to_q(x)), *self.kv(x)
        qkv = F.linear(x, fused) if fp8 is None else fp8(x)
        q, k, v = qkv.chunk(3, dim=-1)  # b l c -> 3 x b l (h d)
        return self.split_heads(q), self.split_heads(k), self.split_heads(v)

    def kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of `context` (b, l, c), split into heads: (b, h, l, d) each."""
        return self.split_heads(self.to_k(context)), self.split_heads(self.to_v(context))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is None:
            q, k, v = self.qkv(x)
        else:
            q, (k, v) = self.split_heads(self.to_q(x)), self.kv(context)
        return self.to_out(self.merge_heads(attention(q, k, v)))


class FeedForward(nn.Module):
    """GEGLU feed-forward (diffusers' FeedForward with mult 4)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.proj = nn.Linear(dim, dim * mult * 2)
        self.out = nn.Linear(dim * mult, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return self.out(h * F.gelu(gate))
