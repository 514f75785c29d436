"""Spatial transformer of the UNets: self-attention (optionally extended by reference K/V), image cross-attention, FF.

The ReferenceNet records each block's `norm1` output; the denoiser's matching block appends the reference image's
keys/values to the self-attention of the cond half. Both are explicit tensors here, not module state.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..kernels.two_source_attention import two_source_attention
from .attention import Attention, FeedForward

RefKV = tuple[torch.Tensor, torch.Tensor]  # keys, values of the reference entries of one layer: (E, h, l, d) each


class ReferenceKV(NamedTuple):
    """What the cond rows of one self-attention layer append to their own keys: reference entries (stored once
    per video) and, per cond row, the entry it reads (no per-frame copies)."""

    k: torch.Tensor  # (E, heads, l, d)
    v: torch.Tensor  # (E, heads, l, d)
    index: torch.Tensor  # (fc,) int64 in [0, E): entry of each cond row


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None, context_scale: float = 1.0):
        """context_dim None: no cross-attention at all (EchoMimic's ReferenceNet has none)."""
        super().__init__()
        self.context_scale = context_scale  # EchoMimic scales its audio cross-attention (3.0)
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim) if context_dim is not None else None
        self.attn2 = Attention(dim, heads, head_dim, context_dim) if context_dim is not None else None
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def self_attention(self, x: torch.Tensor, ref: ReferenceKV | None) -> torch.Tensor:
        """Plain self-attention, or, with `ref`, [own ‖ reference entry] keys for the last fc rows (the cond half)."""
        if ref is None:
            return self.attn1(x)
        q, k, v = self.attn1.qkv(x)
        return self.attn1.to_out(self.attn1.merge_heads(two_source_attention(q, k, v, ref.k, ref.v, ref.index)))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None, ref: ReferenceKV | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (b, l, c), context (b, t, c_ctx) -> (output, norm1 record (b, l, c)). Without a context the
        cross-attention is skipped."""
        n = self.norm1(x)
        x = self.self_attention(n, ref) + x
        if context is not None and self.attn2 is not None:
            a = self.attn2(self.norm2(x), context)
            x = (a if self.context_scale == 1.0 else a * self.context_scale) + x
        return self.ff(self.norm3(x)) + x, n


class SpatialTransformer(nn.Module):
    """GroupNorm -> 1x1 conv in -> one TransformerBlock -> 1x1 conv out, residual."""

    def __init__(self, channels: int, heads: int, context_dim: int | None, groups: int, context_scale: float = 1.0):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(channels, heads, channels // heads, context_dim, context_scale)])
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None, ref: ReferenceKV | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) -> (output (B, C, H, W), norm1 record (B, H*W, C))."""
        b, c, hh, ww = x.shape
        h = self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(b, hh * ww, c)  # b c h w -> b (h w) c
        h, record = self.transformer_blocks[0](h, context, ref)
        h = h.reshape(b, hh, ww, c).permute(0, 3, 1, 2)  # b (h w) c -> b c h w
        return self.proj_out(h) + x, record
