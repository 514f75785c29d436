"""Triton implementation of `group_norm_silu` (see there); imported only when the kernel runs."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def group_norm_kernel(X, Y, W, B, C, S, G, eps, x_n, x_c, x_s, y_n, y_c, y_s, w_c, b_c,
                      BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr, SILU: tl.constexpr):
    """One program per (sample, group): the group's C/G channels x S positions, walked in (BLOCK_C, BLOCK_S)
    tiles through X's strides (contiguous and channels_last alike); mean, then centred variance, in float32."""
    pid = tl.program_id(0)
    n = (pid // G).to(tl.int64)
    cpg = C // G
    offs_c = (pid % G) * cpg + tl.arange(0, BLOCK_C)
    c_mask = tl.arange(0, BLOCK_C) < cpg
    x_rows = X + n * x_n + offs_c[:, None] * x_c  # (BLOCK_C, 1) row pointers
    count = cpg * S
    acc = tl.zeros([BLOCK_C, BLOCK_S], dtype=tl.float32)
    for start in range(0, S, BLOCK_S):
        offs_s = start + tl.arange(0, BLOCK_S)
        mask = c_mask[:, None] & (offs_s < S)[None, :]
        acc += tl.load(x_rows + offs_s[None, :] * x_s, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(acc) / count
    acc = tl.zeros([BLOCK_C, BLOCK_S], dtype=tl.float32)
    for start in range(0, S, BLOCK_S):
        offs_s = start + tl.arange(0, BLOCK_S)
        mask = c_mask[:, None] & (offs_s < S)[None, :]
        x = tl.load(x_rows + offs_s[None, :] * x_s, mask=mask, other=0.0).to(tl.float32)
        centred = tl.where(mask, x - mean, 0.0)
        acc += centred * centred
    rstd = 1.0 / tl.sqrt(tl.sum(acc) / count + eps)
    scale = (tl.load(W + offs_c * w_c, mask=c_mask, other=0.0).to(tl.float32) * rstd)[:, None]  # (BLOCK_C, 1)
    shift = tl.load(B + offs_c * b_c, mask=c_mask, other=0.0).to(tl.float32)[:, None]
    y_rows = Y + n * y_n + offs_c[:, None] * y_c
    for start in range(0, S, BLOCK_S):
        offs_s = start + tl.arange(0, BLOCK_S)
        mask = c_mask[:, None] & (offs_s < S)[None, :]
        x = tl.load(x_rows + offs_s[None, :] * x_s, mask=mask, other=0.0).to(tl.float32)
        y = (x - mean) * scale + shift
        if SILU:
            y = y / (1.0 + tl.exp(-y))  # SiLU
        tl.store(y_rows + offs_s[None, :] * y_s, y.to(Y.dtype.element_ty), mask=mask)
