"""Self-attention whose cond rows also attend to cached reference keys/values, without concatenating them.

Rows b < n_uncond (the uncond CFG half) attend to their own tokens; rows b >= n_uncond attend to
[own tokens ‖ reference tokens of entry k_ref[ref_index[b - n_uncond]]]. The reference entries are stored once (a
video has two) and each cond row names the one it reads, so no per-row copy of them is ever kept. One launch
covers both halves; the softmax runs online across the two key sources (flash-attention style), so the
(L + L_ref) key matrix is never built.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from . import registry


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


@functools.cache
def _kernel():
    from .two_source_attention_triton import attention_kernel  # Triton is optional: imported on first use

    return attention_kernel


@torch.library.custom_op("emo::two_source_attention", mutates_args=())
def two_source_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_ref: torch.Tensor,
                            v_ref: torch.Tensor, ref_index: torch.Tensor) -> torch.Tensor:
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    k_ref, v_ref, ref_index = k_ref.contiguous(), v_ref.contiguous(), ref_index.contiguous()
    b, heads, length, d = q.shape
    out = torch.empty_like(q)
    block_d = registry.pow2_block(d, 16)  # head dims 40/80/160 padded to a power of two
    block_m, block_n = (64, 64) if block_d <= 64 else (32, 32)
    grid = (math.ceil(length / block_m), b * heads)
    _kernel()[grid](q, k, v, k_ref, v_ref, ref_index, out, length, k_ref.shape[2], b - ref_index.shape[0], heads,
                    d, d ** -0.5,
                    q.stride(0), q.stride(1), q.stride(2), k_ref.stride(0), k_ref.stride(1), k_ref.stride(2),
                    BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d)
    return out


@two_source_attention_op.register_fake
def _(q, k, v, k_ref, v_ref, ref_index):
    return torch.empty_like(q)


def two_source_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_ref: torch.Tensor,
                         v_ref: torch.Tensor, ref_index: torch.Tensor) -> torch.Tensor:
    if registry.active("two_source_attention", q):
        return two_source_attention_op(q, k, v, k_ref, v_ref, ref_index)
    return two_source_attention_reference(q, k, v, k_ref, v_ref, ref_index)
