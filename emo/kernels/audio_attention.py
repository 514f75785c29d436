"""Cross-attention of spatial tokens over a few audio tokens, for several attentions at once, with each output row
weighted by its attention's region mask: the attention part of the stacked audio blocks (full / face / lip).

The g attentions are stacked as heads: q (b, l, g·h, d), k/v (b, t, g·h, d) (any strides with a contiguous head
dim, e.g. views of one fused projection); head j belongs to attention j // h, whose mask (l,) scales the output
rows. Written as (b, l, g·h, d), i.e. (b, l, g·h·d) = [m_0·o_0 | m_1·o_1 | ...], ready for one matmul that applies
all g output maps at once (see AudioTransformerBlock). The audio sequence t is short (~32 tokens), so one key block
usually covers it; longer ones are walked with an online softmax.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from . import registry


def audio_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              masks: torch.Tensor) -> torch.Tensor:
    """q (b, l, g·h, d), k/v (b, t, g·h, d), masks (g, l) -> (b, l, g·h, d), rows of attention i times masks[i]."""
    heads_per_mask = q.shape[2] // masks.shape[0]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # b l n d -> b n l d
    weight = masks.repeat_interleave(heads_per_mask, dim=0)  # (g, l) -> (g·h, l)
    return (out * weight[None, :, :, None]).transpose(1, 2)  # b (g h) l d -> b l (g h) d


@functools.cache
def _kernel():
    from .audio_attention_triton import audio_attention_kernel  # Triton is optional: imported on first use

    return audio_attention_kernel


@torch.library.custom_op("emo::audio_attention", mutates_args=())
def audio_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    masks = masks.contiguous()
    b, length, heads, d = q.shape
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # contiguous (b, l, g·h, d)
    block_d = registry.pow2_block(d, 16)  # head dims 40/80/160 padded to a power of two
    block_m = 64 if block_d <= 64 else 32
    block_n = min(64, registry.pow2_block(k.shape[1], 16))  # the whole audio sequence when it is short
    grid = (math.ceil(length / block_m), b * heads)
    _kernel()[grid](q, k, v, masks, out, length, k.shape[1], heads, heads // masks.shape[0], d, d ** -0.5,
                    *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
                    BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
                    PRECISION="ieee" if q.dtype == torch.float32 else "tf32")  # fp32 stays fp32 (no TF32)
    return out


@audio_attention_op.register_fake
def _(q, k, v, masks):
    return q.new_empty(q.shape)


def audio_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mask-weighted stacked cross-attention (see the module docstring): the kernel when active, else SDPA."""
    if registry.active("audio_attention", q):
        return audio_attention_op(q, k, v, masks)
    return audio_attention_reference(q, k, v, masks)
