"""Temporal (motion) module: self-attention along time at every spatial position (AnimateDiff "Vanilla")."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import registry
from ..kernels.folded_weights import folded
from ..kernels.temporal_attention import temporal_attention
from .attention import Attention, FeedForward


def sinusoidal_positions(max_len: int, dim: int) -> torch.Tensor:
    """(1, max_len, dim) interleaved sin/cos table of the temporal positional encoding."""
    position = torch.arange(max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, max_len, dim)
    pe[0, :, 0::2] = torch.sin(position * div_term)
    pe[0, :, 1::2] = torch.cos(position * div_term)
    return pe


class TemporalAttention(Attention):
    def __init__(self, dim: int, heads: int, max_len: int):
        super().__init__(dim, heads, dim // heads)
        self.register_buffer("pe", sinusoidal_positions(max_len, dim))

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x ((b f), l, c) -> same; every spatial token attends over the f frames."""
        if registry.active("temporal_attention", x):
            return self.frame_major(x, frames)
        bf, tokens, c = x.shape
        h = x.view(bf // frames, frames, tokens, c).transpose(1, 2).reshape(-1, frames, c)  # (b f) l c -> (b l) f c
        h = super().forward(h + self.pe[:, :frames])
        return h.view(bf // frames, tokens, frames, c).transpose(1, 2).reshape(bf, tokens, c)  # (b l) f c -> (b f) l c

    def frame_major(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """The same attention without leaving the (b f) l c layout: one qkv projection, `temporal_attention` on
        (b, f, l, h, d) views. Used with the fused kernel; equal to `forward` up to rounding."""
        bf, tokens, c = x.shape
        h = x.view(bf // frames, frames, tokens, c) + self.pe[0, :frames, None]  # (b f) l c -> b f l c, + pe (f, 1, c)
        w_qkv = folded(self, "qkv", lambda: torch.cat([self.to_q.weight, self.to_k.weight, self.to_v.weight]))
        qkv = F.linear(h, w_qkv)  # b f l c -> b f l (3 h d)
        q, k, v = qkv.view(*h.shape[:3], 3, self.heads, -1).unbind(3)  # b f l (3 h d) -> 3 x b f l h d
        out = temporal_attention(q, k, v)  # b f l h d
        return self.to_out(out.reshape(bf, tokens, -1))  # b f l h d -> (b f) l (h d) -> (b f) l c


class TemporalTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, attention_blocks: int, max_len: int):
        super().__init__()
        self.attention_blocks = nn.ModuleList([TemporalAttention(dim, heads, max_len) for _ in range(attention_blocks)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(attention_blocks)])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        for attn, norm in zip(self.attention_blocks, self.norms, strict=True):
            x = attn(norm(x), frames) + x
        return self.ff(self.ff_norm(x)) + x


class MotionModule(nn.Module):
    def __init__(self, channels: int, heads: int, num_layers: int, attention_blocks: int, max_len: int):
        super().__init__()
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [TemporalTransformerBlock(channels, heads, attention_blocks, max_len) for _ in range(num_layers)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x ((b f), C, H, W) -> same shape."""
        bf, c, hh, ww = x.shape
        h = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(bf, hh * ww, c))  # (b f) c h w -> (b f) (h w) c
        for block in self.transformer_blocks:
            h = block(h, frames)
        h = self.proj_out(h).reshape(bf, hh, ww, c).permute(0, 3, 1, 2)  # (b f) (h w) c -> (b f) c h w
        return h + x
