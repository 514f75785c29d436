"""Triton implementation of `two_source_attention` (see there); imported only when the kernel runs."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _accumulate(q, K, V, k_l, k_d, v_l, v_d, length, offs_d, d_mask, m_i, l_i, acc, qk_scale,
                BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """Online softmax over one key source: K/V point at its (head, row) start, rows `length` apart by k_l/v_l."""
    for start in range(0, length, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        n_mask = offs_n < length
        kv_mask = n_mask[:, None] & d_mask[None, :]
        k = tl.load(K + offs_n[:, None] * k_l + offs_d[None, :] * k_d, mask=kv_mask, other=0.0)  # (BLOCK_N, BLOCK_D)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION, out_dtype=tl.float32) * qk_scale  # (BLOCK_M, BLOCK_N)
        s = tl.where(n_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(V + offs_n[:, None] * v_l + offs_d[None, :] * v_d, mask=kv_mask, other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc=acc * alpha[:, None], input_precision=PRECISION, out_dtype=tl.float32)
        m_i = m_new
    return m_i, l_i, acc


@triton.jit
def attention_kernel(Q, K, V, KR, VR, IDX, Out, L, LR, FU, HEADS, D, scale,
                     q_b, q_h, q_l, q_d, k_b, k_h, k_l, k_d, v_b, v_h, v_l, v_d,
                     kr_b, kr_h, kr_l, kr_d, vr_b, vr_h, vr_l, vr_d, o_b, o_h, o_l, o_d,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                     PRECISION: tl.constexpr):
    """One program: query rows [pid·BLOCK_M, +BLOCK_M) of one (batch row, head); its own keys, then (cond rows)
    the reference keys of the entry IDX[b - FU] names. Every operand is read or written through its own (b, h, l, d)
    strides."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // HEADS).to(tl.int64)
    h = bh % HEADS
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_mask = offs_m < L
    d_mask = offs_d < D
    q = tl.load(Q + b * q_b + h * q_h + offs_m[:, None] * q_l + offs_d[None, :] * q_d,
                mask=m_mask[:, None] & d_mask[None, :], other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    qk_scale = scale * 1.4426950408889634  # softmax with exp2: logits in base 2
    m_i, l_i, acc = _accumulate(q, K + b * k_b + h * k_h, V + b * v_b + h * v_h, k_l, k_d, v_l, v_d, L, offs_d,
                                d_mask, m_i, l_i, acc, qk_scale, BLOCK_N, PRECISION)
    if b >= FU:
        r = tl.load(IDX + (b - FU)).to(tl.int64)  # the reference entry this cond row reads
        m_i, l_i, acc = _accumulate(q, KR + r * kr_b + h * kr_h, VR + r * vr_b + h * vr_h, kr_l, kr_d, vr_l, vr_d,
                                    LR, offs_d, d_mask, m_i, l_i, acc, qk_scale, BLOCK_N, PRECISION)
    out = acc / l_i[:, None]
    tl.store(Out + b * o_b + h * o_h + offs_m[:, None] * o_l + offs_d[None, :] * o_d, out.to(Out.dtype.element_ty),
             mask=m_mask[:, None] & d_mask[None, :])
