"""Triton implementation of `group_norm_silu` (see there); imported only when the kernel runs."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def group_norm_kernel(X, Y, W, B, C, HW, G, eps, BLOCK: tl.constexpr, SILU: tl.constexpr):
    pid = tl.program_id(0)  # one program per (sample, group)
    n = pid // G
    g = pid % G
    cpg = C // G
    size = cpg * HW
    base = n.to(tl.int64) * C * HW + g * cpg * HW
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, size, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        acc += tl.load(X + base + idx, mask=idx < size, other=0.0).to(tl.float32)
    mean = tl.sum(acc, axis=0) / size
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, size, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        x = tl.load(X + base + idx, mask=idx < size, other=0.0).to(tl.float32)
        d = tl.where(idx < size, x - mean, 0.0)
        acc += d * d
    rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / size + eps)
    for start in range(0, size, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        mask = idx < size
        c = g * cpg + idx // HW
        x = tl.load(X + base + idx, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(W + c, mask=mask, other=1.0).to(tl.float32)
        b = tl.load(B + c, mask=mask, other=0.0).to(tl.float32)
        y = (x - mean) * rstd * w + b
        if SILU:
            y = y * tl.sigmoid(y)
        tl.store(Y + base + idx, y.to(Y.dtype.element_ty), mask=mask)
