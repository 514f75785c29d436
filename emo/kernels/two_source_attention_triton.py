"""Triton implementation of `two_source_attention` (see there); imported only when the kernel runs."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _accumulate(q, K, V, stride_l, length, offs_d, d_mask, m_i, l_i, acc, scale, BLOCK_N: tl.constexpr):
    for start in range(0, length, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        n_mask = offs_n < length
        kv_off = offs_n[:, None] * stride_l + offs_d[None, :]
        k = tl.load(K + kv_off, mask=n_mask[:, None] & d_mask[None, :], other=0.0)
        s = tl.dot(q, tl.trans(k)).to(tl.float32) * scale  # (BLOCK_M, BLOCK_N)
        s = tl.where(n_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(V + kv_off, mask=n_mask[:, None] & d_mask[None, :], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v).to(tl.float32)
        m_i = m_new
    return m_i, l_i, acc


@triton.jit
def attention_kernel(Q, K, V, KR, VR, IDX, O, L, LR, FU, HEADS, D, scale,
                     s_b, s_h, s_l, r_b, r_h, r_l,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // HEADS
    h = bh % HEADS
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_mask = offs_m < L
    d_mask = offs_d < D
    base = b.to(tl.int64) * s_b + h * s_h
    q = tl.load(Q + base + offs_m[:, None] * s_l + offs_d[None, :], mask=m_mask[:, None] & d_mask[None, :],
                other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    m_i, l_i, acc = _accumulate(q, K + base, V + base, s_l, L, offs_d, d_mask, m_i, l_i, acc, scale, BLOCK_N)
    if b >= FU:
        entry = tl.load(IDX + (b - FU))  # the reference entry this cond row reads
        rbase = entry.to(tl.int64) * r_b + h * r_h
        m_i, l_i, acc = _accumulate(q, KR + rbase, VR + rbase, r_l, LR, offs_d, d_mask, m_i, l_i, acc, scale,
                                    BLOCK_N)
    out = acc / l_i[:, None]
    tl.store(O + base + offs_m[:, None] * s_l + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=m_mask[:, None] & d_mask[None, :])
