"""Triton implementation of `audio_attention` (see there); imported only when the kernel runs."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def audio_attention_kernel(Q, K, V, M, Out, L, T, HEADS, HEADS_PER_MASK, D, scale,
                           q_b, q_l, q_h, q_d, k_b, k_t, k_h, k_d, v_b, v_t, v_h, v_d, m_g, m_l,
                           o_b, o_l, o_h, o_d,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                           PRECISION: tl.constexpr):
    """One program: query rows [pid·BLOCK_M, +BLOCK_M) of one (batch, stacked head) against all T audio tokens.
    Every operand is read or written through its own strides; dot products accumulate in float32."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // HEADS).to(tl.int64)
    h = bh % HEADS
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_mask = offs_m < L
    d_mask = offs_d < D
    q = tl.load(Q + b * q_b + h * q_h + offs_m[:, None] * q_l + offs_d[None, :] * q_d,
                mask=m_mask[:, None] & d_mask[None, :], other=0.0)  # (BLOCK_M, BLOCK_D)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    qk_scale = scale * 1.4426950408889634  # softmax with exp2: logits in base 2
    k_base = K + b * k_b + h * k_h + offs_d[None, :] * k_d
    v_base = V + b * v_b + h * v_h + offs_d[None, :] * v_d
    for start in range(0, T, BLOCK_N):  # usually a single block: audio sequences are short
        offs_n = start + tl.arange(0, BLOCK_N)
        n_mask = offs_n < T
        kv_mask = n_mask[:, None] & d_mask[None, :]
        k = tl.load(k_base + offs_n[:, None] * k_t, mask=kv_mask, other=0.0)  # (BLOCK_N, BLOCK_D)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION, out_dtype=tl.float32) * qk_scale  # (BLOCK_M, BLOCK_N)
        s = tl.where(n_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + offs_n[:, None] * v_t, mask=kv_mask, other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc=acc * alpha[:, None], input_precision=PRECISION, out_dtype=tl.float32)
        m_i = m_new
    # epilogue: the region mask of this head's attention, one weight per query row
    weight = tl.load(M + (h // HEADS_PER_MASK) * m_g + offs_m * m_l, mask=m_mask, other=0.0).to(tl.float32)
    out = acc * (weight / l_i)[:, None]
    tl.store(Out + b * o_b + h * o_h + offs_m[:, None] * o_l + offs_d[None, :] * o_d, out.to(Out.dtype.element_ty),
             mask=m_mask[:, None] & d_mask[None, :])
