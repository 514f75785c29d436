"""Audio cross-attention module of the denoiser (Hallo's hierarchical audio-driven attention).

Each frame's spatial tokens attend to that frame's audio tokens. In "stacked" blocks three attentions (full, face,
lip) are weighted by region masks, passed through 1x1 convs (per-token linear maps) and mixed with motion_scale.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention, FeedForward


def _pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv applied to tokens (b, l, c): the same as a linear map over channels."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)


class AudioTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, audio_dim: int, stacked: bool):
        super().__init__()
        self.stacked = stacked
        if stacked:
            self.zero_conv_full = nn.Conv2d(dim, dim, 1)
            self.zero_conv_face = nn.Conv2d(dim, dim, 1)
            self.zero_conv_lip = nn.Conv2d(dim, dim, 1)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm1 = nn.LayerNorm(dim)
        if stacked:
            self.attn2_0 = Attention(dim, heads, head_dim, audio_dim)
            self.attn2_1 = Attention(dim, heads, head_dim, audio_dim)
            self.attn2_2 = Attention(dim, heads, head_dim, audio_dim)
        else:
            self.attn2 = Attention(dim, heads, head_dim, audio_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, audio: torch.Tensor, masks: torch.Tensor,
                motion_scale: torch.Tensor | None) -> torch.Tensor:
        """x (b, l, c), audio (b, t, c_a), masks (3, l) full/face/lip, motion_scale (3,) or None (plain sum)."""
        x = self.attn1(self.norm1(x)) + x
        n = self.norm2(x)
        if not self.stacked:
            x = self.attn2(n, audio) + x
        else:
            parts = [
                _pointwise(conv, attn(n, audio) * m[None, :, None])
                for attn, conv, m in zip((self.attn2_0, self.attn2_1, self.attn2_2),
                                         (self.zero_conv_full, self.zero_conv_face, self.zero_conv_lip), masks)
            ]
            if motion_scale is not None:
                parts = [p * s for p, s in zip(parts, motion_scale)]
            x = parts[0] + parts[1] + parts[2] + x
        return self.ff(self.norm3(x)) + x


class AudioTransformer(nn.Module):
    """GroupNorm -> 1x1 conv to `inner` channels -> AudioTransformerBlock -> 1x1 conv back, residual."""

    def __init__(self, channels: int, inner: int, heads: int, audio_dim: int, groups: int, stacked: bool):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList([AudioTransformerBlock(inner, heads, inner // heads, audio_dim, stacked)])
        self.proj_out = nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor, audio: torch.Tensor, masks: torch.Tensor,
                motion_scale: torch.Tensor | None) -> torch.Tensor:
        """x (B, C, H, W) with B = batch·frames, audio (B, t, c_a) -> (B, C, H, W)."""
        b, _, hh, ww = x.shape
        h = self.proj_in(self.norm(x))
        inner = h.shape[1]
        h = h.permute(0, 2, 3, 1).reshape(b, hh * ww, inner)  # b c h w -> b (h w) c
        h = self.transformer_blocks[0](h, audio, masks, motion_scale)
        h = h.reshape(b, hh, ww, inner).permute(0, 3, 1, 2)  # b (h w) c -> b c h w
        return self.proj_out(h) + x
