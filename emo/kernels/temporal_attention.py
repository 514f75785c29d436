"""Self-attention along time of the motion modules, on frame-major tensors: no (b f) l -> (b l) f transposes.

q/k/v are (b, f, l, h, d): batch, frames, spatial positions, heads, head dim (any strides with a contiguous head
dim, e.g. slices of one fused qkv projection). Every (batch, position, head) attends over its own f frames. f is
short (a clip's frames, ~2..24) while b·l·h is large, so the kernel gives each program a block of positions of
one (batch, head) and keeps that block's whole key/value sequence in registers.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from . import registry


def temporal_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q/k/v (b, f, l, h, d) -> (b, f, l, h, d), softmax attention over f with scale 1/sqrt(d)."""
    q, k, v = (t.permute(0, 2, 3, 1, 4) for t in (q, k, v))  # b f l h d -> b l h f d
    return F.scaled_dot_product_attention(q, k, v).permute(0, 3, 1, 2, 4)  # b l h f d -> b f l h d


@functools.cache
def _kernel():
    from .temporal_attention_triton import temporal_attention_kernel  # Triton is optional: imported on first use

    return temporal_attention_kernel


def _blocks(frames: int, d: int) -> tuple[int, int, int, int]:
    """(BLOCK_L, BLOCK_F, BLOCK_D, num_warps): f and d padded to powers of two; ~4096 key elements a program."""
    block_f = registry.pow2_block(frames, 2)
    block_d = registry.pow2_block(d, 16)  # head dims 40/80/160 -> 64/128/256
    block_l = max(1, min(32, 4096 // (block_f * block_d)))
    return block_l, block_f, block_d, 4 if block_l * block_f * block_d <= 4096 else 8


@torch.library.custom_op("emo::temporal_attention", mutates_args=())
def temporal_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    b, frames, length, heads, d = q.shape
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # contiguous (b, f, l, h, d)
    block_l, block_f, block_d, warps = _blocks(frames, d)
    grid = (math.ceil(length / block_l), b * heads)
    _kernel()[grid](q, k, v, out, frames, length, heads, d, d ** -0.5,
                    *q.stride()[:4], *k.stride()[:4], *v.stride()[:4], *out.stride()[:4],
                    BLOCK_L=block_l, BLOCK_F=block_f, BLOCK_D=block_d, num_warps=warps)
    return out


@temporal_attention_op.register_fake
def _(q, k, v):
    return q.new_empty(q.shape)


def temporal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q/k/v (b, f, l, h, d) -> (b, f, l, h, d): the kernel when active, else scaled_dot_product_attention."""
    if registry.active("temporal_attention", q):
        return temporal_attention_op(q, k, v)
    return temporal_attention_reference(q, k, v)
