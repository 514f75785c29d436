"""Cross-attention of spatial tokens over a few audio tokens, for several attentions at once, with each output row
weighted by its attention's region mask: the attention part of the stacked audio blocks (full / face / lip).

The g attentions are stacked as heads: q (b, l, g·h, d), k/v (b, t, g·h, d), with any strides (e.g. views of one
fused projection: the kernel reads every operand through its own strides); head j belongs to attention j // h,
whose mask (l,) scales the output rows. Written as (b, l, g·h, d), i.e. (b, l, g·h·d) = [m_0·o_0 | m_1·o_1 | ...],
ready for one matmul that applies all g output maps at once (see AudioTransformerBlock). The audio sequence t is
short (~32 tokens), so one key block usually covers it; longer ones are walked with an online softmax.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import precision, registry
from .launch import Launch, Tiles, pow2_block, strides


def audio_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              masks: torch.Tensor) -> torch.Tensor:
    """q (b, l, g·h, d), k/v (b, t, g·h, d), masks (g, l) -> (b, l, g·h, d), rows of attention i times masks[i]."""
    heads_per_mask = q.shape[2] // masks.shape[0]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # b l n d -> b n l d
    weight = masks.repeat_interleave(heads_per_mask, dim=0)  # (g, l) -> (g·h, l)
    return (out * weight[None, :, :, None]).transpose(1, 2)  # b (g h) l d -> b l (g h) d


# (dtype, head dim) -> tiles for SD1.5's head dims (32 audio tokens: one key block): float16 and bfloat16 compile
# to wgmma, float32 (IEEE, no tensor cores) to FMA, all without spills on sm_90 (`python -m emo.kernels.aot`).
TILES: dict[tuple[torch.dtype, int], Tiles] = {
    **{(dtype, d): Tiles(block_m, 32, warps, stages)
       for dtype in (torch.float16, torch.bfloat16)
       for d, block_m, warps, stages in ((40, 128, 8, 2), (80, 64, 4, 2), (160, 64, 8, 2))},
    **{(torch.float32, d): t for d, t in ((40, Tiles(32, 32)), (80, Tiles(32, 16)), (160, Tiles(16, 32)))},
}


def tiles(dtype: torch.dtype, d: int, tokens: int) -> tuple[Tiles, int]:
    """(tiles, BLOCK_D): the table's entry, or a rule for other head dims and dtypes (float32, tests)."""
    block_d = pow2_block(d, 16)  # head dims 40/80/160 padded to a power of two
    t = TILES.get((dtype, d), Tiles(64 if block_d <= 64 else 32, 64))
    return Tiles(t.block_m, min(t.block_n, pow2_block(tokens, 16)), t.warps, t.stages), block_d


def _output(q: torch.Tensor) -> torch.Tensor:
    return q.new_empty(q.shape)  # contiguous (b, l, g·h, d): the caller merges (g·h, d) for free


def audio_attention_launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           masks: torch.Tensor) -> tuple[Launch, torch.Tensor]:
    """The kernel launch for q (b, l, g·h, d), k/v (b, t, g·h, d), masks (g, l), any strides; and its output."""
    b, length, heads, d = q.shape
    out = _output(q)
    t, block_d = tiles(q.dtype, d, k.shape[1])
    launch = Launch("emo.kernels.audio_attention_triton", "audio_attention_kernel",
                    (math.ceil(length / t.block_m), b * heads),
                    (q, k, v, masks, out, length, k.shape[1], heads, heads // masks.shape[0], d, d ** -0.5,
                     *strides(q, k, v, masks, out)),
                    dict(BLOCK_M=t.block_m, BLOCK_N=t.block_n, BLOCK_D=block_d, PRECISION=precision.DOT_PRECISION),
                    t.warps, t.stages)
    return launch, out


@torch.library.custom_op("emo::audio_attention", mutates_args=())
def audio_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    launch, out = audio_attention_launch(q, k, v, masks)
    launch.run()
    return out


@audio_attention_op.register_fake
def _(q, k, v, masks):
    return _output(q)


def audio_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mask-weighted stacked cross-attention (see the module docstring): the kernel when active, else SDPA."""
    return registry.dispatch("audio_attention", audio_attention_op, audio_attention_reference, q, k, v, masks)
