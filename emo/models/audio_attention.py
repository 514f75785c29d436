"""Audio cross-attention module of the denoiser (Hallo's hierarchical audio-driven attention).

Each frame's spatial tokens attend to that frame's audio tokens. In "stacked" blocks three attentions (full, face,
lip) are weighted by region masks, passed through 1x1 convs (per-token linear maps) and mixed with motion_scale.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import registry
from ..kernels.audio_attention import audio_attention
from ..kernels.folded_weights import folded
from .attention import Attention, FeedForward


def _pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv applied to tokens (b, l, c): the same as a linear map over channels."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)


class _Stacked(NamedTuple):
    """The stacked branch's weights, folded for `AudioTransformerBlock.stacked_fused` (i = full, face, lip)."""

    q: torch.Tensor  # (3·inner, c): the three to_q stacked
    kv: torch.Tensor  # (6·inner, c_a): to_k of the three, then to_v of the three
    out: torch.Tensor  # (c, 3·inner): [conv_i.W @ to_out_i.W]_i side by side
    out_bias: torch.Tensor  # (3, c): conv_i.W @ to_out_i.b (scaled by the region mask per token)
    conv_bias: torch.Tensor  # (3, c): conv_i.b


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
        elif registry.active("audio_attention", n):
            x = self.stacked_fused(n, audio, masks, motion_scale) + x
        else:
            parts = [
                _pointwise(conv, attn(n, audio) * m[None, :, None])
                for attn, conv, m in zip((self.attn2_0, self.attn2_1, self.attn2_2),
                                         (self.zero_conv_full, self.zero_conv_face, self.zero_conv_lip), masks,
                                         strict=True)
            ]
            if motion_scale is not None:
                parts = [p * s for p, s in zip(parts, motion_scale, strict=True)]
            x = parts[0] + parts[1] + parts[2] + x
        return self.ff(self.norm3(x)) + x

    def _fold(self) -> _Stacked:
        attns = (self.attn2_0, self.attn2_1, self.attn2_2)
        convs = (self.zero_conv_full, self.zero_conv_face, self.zero_conv_lip)
        dtype = attns[0].to_out.weight.dtype
        composed = [conv.weight.flatten(1).float() @ a.to_out.weight.float()
                    for a, conv in zip(attns, convs, strict=True)]
        out_bias = [conv.weight.flatten(1).float() @ a.to_out.bias.float()
                    for a, conv in zip(attns, convs, strict=True)]
        return _Stacked(torch.cat([a.to_q.weight for a in attns]),
                        torch.cat([a.to_k.weight for a in attns] + [a.to_v.weight for a in attns]),
                        torch.cat(composed, dim=1).to(dtype), torch.stack(out_bias).to(dtype),
                        torch.stack([conv.bias for conv in convs]))

    def stacked_fused(self, n: torch.Tensor, audio: torch.Tensor, masks: torch.Tensor,
                      motion_scale: torch.Tensor | None) -> torch.Tensor:
        """The stacked branch's sum, as one stacked attention (`audio_attention`) and one matmul. With
        a_i = merge_heads(softmax(q_i k_i^T / sqrt(d)) v_i), W_i / b_i the 1x1 conv, s_i the motion scale:

            s_i·conv_i(m_i·to_out_i(a_i)) = (s_i m_i)·(W_i to_out_i.W) a_i + (s_i m_i)·W_i to_out_i.b + s_i b_i,

        so the sum over i is [m'_0 a_0 | m'_1 a_1 | m'_2 a_2] @ [W_i to_out_i.W]_i^T + m'^T [W_i to_out_i.b]_i
        + Σ_i s_i b_i with m'_i = s_i m_i; the kernel applies m' to its output rows. Equal to the plain branch up
        to rounding."""
        w = folded(self, "stacked", self._fold)
        b, length, _ = n.shape
        t, heads = audio.shape[1], 3 * self.attn2_0.heads
        q = F.linear(n, w.q).view(b, length, heads, -1)  # b l c -> b l (3 h d) -> b l (3 h) d
        k, v = F.linear(audio, w.kv).view(b, t, 2, heads, -1).unbind(2)  # b t (2 3 h d) -> 2 x b t (3 h) d
        scale = masks.new_ones(3) if motion_scale is None else motion_scale
        weights = (masks * scale[:, None]).to(n.dtype)  # m' (3, l)
        a = audio_attention(q, k, v, weights).reshape(b, length, -1)  # b l (3 h) d -> b l (3 h d)
        bias = weights.T @ w.out_bias + scale.to(n.dtype) @ w.conv_bias  # (l, 3) @ (3, c) + (c,) -> (l, c)
        return F.linear(a, w.out) + bias


class AudioTransformer(nn.Module):
    """GroupNorm -> 1x1 conv to `inner` channels -> AudioTransformerBlock -> 1x1 conv back, residual."""

    def __init__(self, channels: int, inner: int, heads: int, audio_dim: int, groups: int, stacked: bool):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [AudioTransformerBlock(inner, heads, inner // heads, audio_dim, stacked)])
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
