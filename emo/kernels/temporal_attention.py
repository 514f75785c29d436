"""Self-attention along time of the motion modules, on frame-major tensors: no (b f) l -> (b l) f transposes.

q/k/v are (b, f, l, h, d): batch, frames, spatial positions, heads, head dim, with any strides (e.g. slices of
one fused qkv projection: the kernel reads every operand through its own strides, no copies). Every (batch,
position, head) attends over its own f frames. f is short (a clip's frames, ~2..32) while b·l·h is large, so the
kernel gives each program a block of positions of one (batch, head) and keeps that block's whole key/value
sequence in registers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import registry
from .launch import Launch, Tiles, pow2_block, strides


def temporal_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q/k/v (b, f, l, h, d) -> (b, f, l, h, d), softmax attention over f with scale 1/sqrt(d)."""
    q, k, v = (t.permute(0, 2, 3, 1, 4) for t in (q, k, v))  # b f l h d -> b l h f d
    return F.scaled_dot_product_attention(q, k, v).permute(0, 3, 1, 2, 4)  # b l h f d -> b f l h d


FRAME_BLOCK = 32  # clips of up to 32 frames (MotionConfig.max_len)
# (dtype, head dim) -> Tiles(BLOCK_L positions a program, frame block, warps) for SD1.5's head dims: the block's
# keys and values stay in registers, sized to compile without spills on sm_90 (`python -m emo.kernels.aot`).
# Shorter clips (a smaller frame block) get proportionally more positions a program.
TILES: dict[tuple[torch.dtype, int], Tiles] = {
    (dtype, d): Tiles(block_l, FRAME_BLOCK, warps)
    for dtype in (torch.float16, torch.bfloat16) for d, block_l, warps in ((40, 2, 4), (80, 1, 4), (160, 1, 8))
}


def tiles(dtype: torch.dtype, frames: int, d: int) -> tuple[Tiles, int]:
    """(Tiles(BLOCK_L, BLOCK_F, warps, stages), BLOCK_D): frames and head dim padded to powers of two."""
    block_f, block_d = pow2_block(frames, 2), pow2_block(d, 16)  # head dims 40/80/160 -> 64/128/256
    t = TILES.get((dtype, d), Tiles(max(1, 4096 // (FRAME_BLOCK * block_d)), FRAME_BLOCK))
    return Tiles(t.block_m * max(1, t.block_n // block_f), block_f, t.warps, t.stages), block_d


def _output(q: torch.Tensor) -> torch.Tensor:
    return q.new_empty(q.shape)  # contiguous (b, f, l, h, d): the caller merges (h, d) for free


def temporal_attention_launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[Launch, torch.Tensor]:
    """The kernel launch for q/k/v (b, f, l, h, d) with any strides, and the output it writes."""
    b, frames, length, heads, d = q.shape
    out = _output(q)
    t, block_d = tiles(q.dtype, frames, d)
    launch = Launch("emo.kernels.temporal_attention_triton", "temporal_attention_kernel",
                    (math.ceil(length / t.block_m), b * heads),
                    (q, k, v, out, frames, length, heads, d, d ** -0.5, *strides(q, k, v, out)),
                    dict(BLOCK_L=t.block_m, BLOCK_F=t.block_n, BLOCK_D=block_d), t.warps, t.stages)
    return launch, out


@torch.library.custom_op("emo::temporal_attention", mutates_args=())
def temporal_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    launch, out = temporal_attention_launch(q, k, v)
    launch.run()
    return out


@temporal_attention_op.register_fake
def _(q, k, v):
    return _output(q)


def temporal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q/k/v (b, f, l, h, d) -> (b, f, l, h, d): the kernel when active, else scaled_dot_product_attention."""
    return registry.dispatch("temporal_attention", temporal_attention_op, temporal_attention_reference, q, k, v)
