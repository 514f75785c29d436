"""Triton kernels against their plain-torch fallbacks: on CPU through Triton's interpreter (small shapes), on a
GPU whenever one is present."""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # must be set before triton is imported

from emo.kernels import registry  # noqa: E402
from emo.kernels.group_norm import group_norm_silu, group_norm_silu_reference  # noqa: E402
from emo.kernels.two_source_attention import two_source_attention, two_source_attention_reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16] if DEVICE == "cuda" else [torch.float32]
TOL = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.float16: dict(atol=2e-3, rtol=2e-3)}


@pytest.fixture(autouse=True)
def kernels_on():
    with registry.using(registry.KERNELS):
        yield


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, groups, silu", [
    ((2, 64, 8, 8), 32, True),
    ((3, 40, 5, 7), 8, True),  # odd spatial size, 5 channels a group
    ((1, 96, 33), 32, False),  # 1-d spatial, plain norm
    ((2, 32, 1, 3), 32, True),  # three elements a group
])
def test_group_norm_silu_matches_fallback(shape, groups, silu, dtype):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 3 + 1).to(DEVICE, dtype)
    norm = torch.nn.GroupNorm(groups, shape[1], eps=1e-5).to(DEVICE, dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(shape[1], generator=g))
        norm.bias.copy_(torch.randn(shape[1], generator=g))
        got = group_norm_silu(x, norm, silu)
    assert registry.active("group_norm_silu", x)
    want = group_norm_silu_reference(x.float(), norm.weight.float(), norm.bias.float(), groups, 1e-5, silu)
    torch.testing.assert_close(got.float(), want, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b, fc, heads, length, ref_length, d", [
    (4, 2, 2, 16, 16, 8),
    (6, 3, 3, 37, 21, 40),  # head dim 40 (SD1.5's first level) padded inside the kernel; odd lengths
    (2, 1, 1, 70, 5, 20),  # more query rows than one block
    (3, 3, 2, 9, 33, 16),  # no uncond rows at all
])
def test_two_source_attention_matches_fallback(b, fc, heads, length, ref_length, d, dtype):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(b, heads, length, d, generator=g).to(DEVICE, dtype) for _ in range(3))
    k_ref, v_ref = (torch.randn(fc, heads, ref_length, d, generator=g).to(DEVICE, dtype) for _ in range(2))
    got = two_source_attention(q, k, v, k_ref, v_ref)
    assert registry.active("two_source_attention", q)
    want = two_source_attention_reference(*(t.float() for t in (q, k, v, k_ref, v_ref)))
    torch.testing.assert_close(got.float(), want, **TOL[dtype])


def test_fallback_when_switched_off():
    x = torch.randn(1, 8, 4, 4)
    norm = torch.nn.GroupNorm(4, 8)
    with registry.using(()):
        assert not registry.active("group_norm_silu", x)
        torch.testing.assert_close(group_norm_silu(x, norm), torch.nn.functional.silu(norm(x)), atol=0, rtol=0)
