"""Triton implementation of `temporal_attention` (see there); imported only when the kernel runs."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def temporal_attention_kernel(Q, K, V, Out, F, L, HEADS, D, scale,
                              q_b, q_f, q_l, q_h, q_d, k_b, k_f, k_l, k_h, k_d, v_b, v_f, v_l, v_h, v_d,
                              o_b, o_f, o_l, o_h, o_d,
                              BLOCK_L: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program: positions [pid·BLOCK_L, +BLOCK_L) of one (batch, head), all F query and key frames. Every
    operand is read or written through its own (b, f, l, h, d) strides; products and sums in float32."""
    pid_l = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // HEADS).to(tl.int64)
    h = bh % HEADS
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_f = tl.arange(0, BLOCK_F)
    offs_d = tl.arange(0, BLOCK_D)
    l_mask = offs_l < L
    f_mask = offs_f < F
    d_mask = offs_d < D
    # keys/values of the block: (BLOCK_L, BLOCK_F, BLOCK_D), zero where padded
    kv_mask = l_mask[:, None, None] & f_mask[None, :, None] & d_mask[None, None, :]
    l3, f3, d3 = offs_l[:, None, None], offs_f[None, :, None], offs_d[None, None, :]
    k = tl.load(K + b * k_b + h * k_h + l3 * k_l + f3 * k_f + d3 * k_d, mask=kv_mask, other=0.0).to(tl.float32)
    v = tl.load(V + b * v_b + h * v_h + l3 * v_l + f3 * v_f + d3 * v_d, mask=kv_mask, other=0.0).to(tl.float32)
    row_mask = l_mask[:, None] & d_mask[None, :]  # (BLOCK_L, BLOCK_D)
    q_base = Q + b * q_b + h * q_h + offs_l[:, None] * q_l + offs_d[None, :] * q_d
    o_base = Out + b * o_b + h * o_h + offs_l[:, None] * o_l + offs_d[None, :] * o_d
    qscale = scale * 1.4426950408889634  # softmax with exp2: logits in base 2
    for i in range(0, F):  # query frame
        q = tl.load(q_base + i * q_f, mask=row_mask, other=0.0).to(tl.float32) * qscale
        s = tl.sum(k * q[:, None, :], axis=2)  # (BLOCK_L, BLOCK_F) scores against every key frame
        s = tl.where(f_mask[None, :], s, float("-inf"))
        p = tl.exp2(s - tl.max(s, axis=1)[:, None])
        p = p / tl.sum(p, axis=1)[:, None]
        o = tl.sum(p[:, :, None] * v, axis=1)  # (BLOCK_L, BLOCK_D)
        tl.store(o_base + i * o_f, o.to(Out.dtype.element_ty), mask=row_mask)
