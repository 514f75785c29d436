"""Self-attention whose cond rows also attend to cached reference keys/values, without concatenating them.

Rows b < n_uncond (the uncond CFG half) attend to their own tokens; rows b >= n_uncond attend to
[own tokens ‖ reference tokens of entry k_ref[ref_index[b - n_uncond]]]. The reference entries are stored once (a
video has two) and each cond row names the one it reads, so no per-row copy of them is ever kept. One launch
covers both halves; the softmax runs online across the two key sources (flash-attention style), so the
(L + L_ref) key matrix is never built. Every operand is read through its own strides (the heads of a projection's
(B, L, h·d) output need no copy).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import precision, registry
from .launch import Launch, Tiles, pow2_block, strides


def two_source_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_ref: torch.Tensor,
                                   v_ref: torch.Tensor, ref_index: torch.Tensor) -> torch.Tensor:
    """q/k/v (B, h, L, d); k_ref/v_ref (E, h, Lr, d) entries; ref_index (Bc,) int64: the entry of each of the
    last Bc rows -> (B, h, L, d). The gathered entries live only for this call."""
    fu = q.shape[0] - ref_index.shape[0]
    out_u = F.scaled_dot_product_attention(q[:fu], k[:fu], v[:fu])
    keys = torch.cat([k[fu:], k_ref.index_select(0, ref_index)], dim=2)  # (Bc, h, L + Lr, d)
    values = torch.cat([v[fu:], v_ref.index_select(0, ref_index)], dim=2)
    out_c = F.scaled_dot_product_attention(q[fu:], keys, values)
    return torch.cat([out_u, out_c])


# (dtype, head dim) -> tiles for SD1.5's head dims (40/80/160, padded to 64/128/256 in the kernel): float16 and
# bfloat16 compile to wgmma, float32 (IEEE, no tensor cores) to FMA, all without register spills on sm_90
# (`python -m emo.kernels.aot`).
TILES: dict[tuple[torch.dtype, int], Tiles] = {
    **{(dtype, d): t
       for dtype in (torch.float16, torch.bfloat16)
       for d, t in ((40, Tiles(128, 64, 8, 2)), (80, Tiles(64, 64, 4, 2)), (160, Tiles(64, 32, 8, 3)))},
    **{(torch.float32, d): t for d, t in ((40, Tiles(32, 32)), (80, Tiles(32, 16)), (160, Tiles(16, 32)))},
}


def tiles(dtype: torch.dtype, d: int) -> tuple[Tiles, int]:
    """(tiles, BLOCK_D): the table's entry, or a rule for other head dims and dtypes (float32, tests)."""
    block_d = pow2_block(d, 16)
    return TILES.get((dtype, d), Tiles(64, 64) if block_d <= 64 else Tiles(32, 32)), block_d


def _output(q: torch.Tensor) -> torch.Tensor:
    b, heads, length, d = q.shape
    return q.new_empty(b, length, heads, d).transpose(1, 2)  # (b, h, l, d) over b l h d memory: merges for free


def two_source_attention_launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_ref: torch.Tensor,
                                v_ref: torch.Tensor, ref_index: torch.Tensor) -> tuple[Launch, torch.Tensor]:
    """The kernel launch for these operands (any strides), and the output it writes."""
    b, heads, length, d = q.shape
    out = _output(q)
    t, block_d = tiles(q.dtype, d)
    launch = Launch("emo.kernels.two_source_attention_triton", "attention_kernel",
                    (math.ceil(length / t.block_m), b * heads),
                    (q, k, v, k_ref, v_ref, ref_index, out, length, k_ref.shape[2], b - ref_index.shape[0], heads, d,
                     d ** -0.5,
                     *strides(q, k, v, k_ref, v_ref, out)),
                    dict(BLOCK_M=t.block_m, BLOCK_N=t.block_n, BLOCK_D=block_d, PRECISION=precision.DOT_PRECISION),
                    t.warps, t.stages)
    return launch, out


@torch.library.custom_op("emo::two_source_attention", mutates_args=())
def two_source_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_ref: torch.Tensor,
                            v_ref: torch.Tensor, ref_index: torch.Tensor) -> torch.Tensor:
    launch, out = two_source_attention_launch(q, k, v, k_ref, v_ref, ref_index.contiguous())
    launch.run()
    return out


@two_source_attention_op.register_fake
def _(q, k, v, k_ref, v_ref, ref_index):
    return _output(q)


def two_source_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_ref: torch.Tensor,
                         v_ref: torch.Tensor, ref_index: torch.Tensor) -> torch.Tensor:
    return registry.dispatch("two_source_attention", two_source_attention_op, two_source_attention_reference,
                             q, k, v, k_ref, v_ref, ref_index)
