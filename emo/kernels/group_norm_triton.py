"""Triton implementation of `group_norm_silu` (see there); imported only when the kernel runs."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def group_norm_kernel(X, Y, W, B, C, S, G, eps, x_n, x_c, x_s, y_n, y_c, y_s, w_c, b_c,
                      BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr, SILU: tl.constexpr):
    """One program per (sample, BLOCK_G groups): each group's C/G channels x S positions, walked in (BLOCK_G,
    BLOCK_C, BLOCK_S) tiles through X's strides (contiguous and channels_last alike); mean, then centred
    variance, in float32. Several groups share a program only when a group is small."""
    n = tl.program_id(0).to(tl.int64)
    cpg = C // G
    offs_g = tl.program_id(1) * BLOCK_G + tl.arange(0, BLOCK_G)
    offs_c = tl.arange(0, BLOCK_C)
    channel = offs_g[:, None, None] * cpg + offs_c[None, :, None]  # (BLOCK_G, BLOCK_C, 1)
    c_mask = (offs_g < G)[:, None, None] & (offs_c < cpg)[None, :, None]
    x_rows = X + n * x_n + channel * x_c
    count = cpg * S
    acc = tl.zeros([BLOCK_G, BLOCK_C, BLOCK_S], dtype=tl.float32)
    for start in range(0, S, BLOCK_S):
        offs_s = (start + tl.arange(0, BLOCK_S))[None, None, :]
        acc += tl.load(x_rows + offs_s * x_s, mask=c_mask & (offs_s < S), other=0.0).to(tl.float32)
    mean = (tl.sum(tl.sum(acc, axis=2), axis=1) / count)[:, None, None]  # (BLOCK_G, 1, 1)
    acc = tl.zeros([BLOCK_G, BLOCK_C, BLOCK_S], dtype=tl.float32)
    for start in range(0, S, BLOCK_S):
        offs_s = (start + tl.arange(0, BLOCK_S))[None, None, :]
        mask = c_mask & (offs_s < S)
        x = tl.load(x_rows + offs_s * x_s, mask=mask, other=0.0).to(tl.float32)
        centred = tl.where(mask, x - mean, 0.0)
        acc += centred * centred
    rstd = (1.0 / tl.sqrt(tl.sum(tl.sum(acc, axis=2), axis=1) / count + eps))[:, None, None]
    scale = tl.load(W + channel * w_c, mask=c_mask, other=0.0).to(tl.float32) * rstd  # (BLOCK_G, BLOCK_C, 1)
    shift = tl.load(B + channel * b_c, mask=c_mask, other=0.0).to(tl.float32)
    y_rows = Y + n * y_n + channel * y_c
    for start in range(0, S, BLOCK_S):
        offs_s = (start + tl.arange(0, BLOCK_S))[None, None, :]
        mask = c_mask & (offs_s < S)
        x = tl.load(x_rows + offs_s * x_s, mask=mask, other=0.0).to(tl.float32)
        y = (x - mean) * scale + shift
        if SILU:
            y = y / (1.0 + tl.exp(-y))  # SiLU
        tl.store(y_rows + offs_s * y_s, y.to(Y.dtype.element_ty), mask=mask)
