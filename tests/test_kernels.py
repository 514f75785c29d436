"""Triton kernels against their plain-torch fallbacks and textbook float64 formulas, on contiguous and strided
operands: on CPU through Triton's interpreter (small shapes; tests/conftest.py turns it on for the session), on a
GPU whenever one is present. Every kernel switch made here is scoped (`registry.using`, `interpret_on_cpu`,
monkeypatch) and undone when the test ends."""
from __future__ import annotations

import importlib.util
import math
import os
import threading
import warnings
from contextlib import nullcontext

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)
if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and Triton's interpreter is off (TRITON_INTERPRET)", allow_module_level=True)

from emo.kernels import audio_attention as audio_module  # noqa: E402
from emo.kernels import group_norm as group_norm_module  # noqa: E402
from emo.kernels import precision, registry  # noqa: E402
from emo.kernels import temporal_attention as temporal_module  # noqa: E402
from emo.kernels import two_source_attention as two_source_module  # noqa: E402
from emo.kernels.audio_attention import audio_attention, audio_attention_launch, audio_attention_reference  # noqa: E402
from emo.kernels.group_norm import group_norm_launch, group_norm_silu, group_norm_silu_reference  # noqa: E402
from emo.kernels.launch import Tiles  # noqa: E402
from emo.kernels.temporal_attention import temporal_attention, temporal_attention_launch, temporal_attention_reference  # noqa: E402
from emo.kernels.two_source_attention import (  # noqa: E402
    two_source_attention,
    two_source_attention_launch,
    two_source_attention_reference,
)
from emo.models.audio_attention import AudioTransformerBlock  # noqa: E402
from emo.models.motion_module import MotionModule, TemporalAttention  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# the interpreter has no bfloat16 arithmetic: bfloat16 is tested on a GPU only
DTYPES = [torch.float32, torch.float16, torch.bfloat16] if DEVICE == "cuda" else [torch.float32, torch.float16]
TOL = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.float16: dict(atol=2e-3, rtol=2e-3),
       torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2)}


@pytest.fixture
def registry_restored():
    """After each test (and after monkeypatch's undo): the registry's global and per-thread state as before."""
    def state():
        return set(registry._enabled), registry.enabled(), registry.interpreting(), registry.failures()

    before = state()
    yield
    assert state() == before, "a test leaked registry state"


@pytest.fixture(autouse=True)
def kernels_on(registry_restored, monkeypatch):
    """Every kernel on, for this test only; a failure a test provokes is forgotten after it."""
    monkeypatch.setattr(registry, "_failed", {})
    with registry.using(registry.KERNELS), registry.interpret_on_cpu() if DEVICE == "cpu" else nullcontext():
        yield


def _in_fresh_thread(check) -> None:
    """Run `check` in a new thread: no per-thread scope of this module's fixture, none left behind."""
    errors = []

    def run():
        try:
            check()
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if errors:
        raise errors[0]


def _randn(*shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE, dtype)


# textbook formulas in float64, independent of the kernels and of the fallbacks (which use SDPA / F.group_norm)
def attention64(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over the last two dims."""
    q, k, v = (t.double() for t in (q, k, v))
    return torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), dim=-1) @ v


def two_source64(q, k, v, k_ref, v_ref, ref_index):
    fu = q.shape[0] - ref_index.shape[0]
    k_ref, v_ref = k_ref[ref_index], v_ref[ref_index]  # the entry of each cond row
    return torch.cat([attention64(q[:fu], k[:fu], v[:fu]),
                      attention64(q[fu:], torch.cat([k[fu:], k_ref], 2), torch.cat([v[fu:], v_ref], 2))])


def _entries(k_ref: torch.Tensor) -> torch.Tensor:
    """A reference index that reads every entry once, last first (so a kernel reading row b - FU would fail)."""
    return torch.arange(k_ref.shape[0] - 1, -1, -1, device=k_ref.device)


def temporal64(q, k, v):
    q, k, v = (t.permute(0, 2, 3, 1, 4) for t in (q, k, v))  # b f l h d -> b l h f d
    return attention64(q, k, v).permute(0, 3, 1, 2, 4)  # b l h f d -> b f l h d


def audio64(q, k, v, masks):
    out = attention64(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # b l n d -> b n l d
    weight = masks.double().repeat_interleave(q.shape[2] // masks.shape[0], dim=0)  # (g, l) -> (g h, l)
    return (out * weight[None, :, :, None]).transpose(1, 2)  # b n l d -> b l n d


def group_norm64(x, weight, bias, groups, eps, silu):
    n, c = x.shape[:2]
    g = x.double().reshape(n, groups, -1)
    y = ((g - g.mean(-1, keepdim=True)) / torch.sqrt(g.var(-1, unbiased=False, keepdim=True) + eps)).view(x.shape)
    affine = (-1,) + (1,) * (x.dim() - 2)
    y = y * weight.double().view(affine) + bias.double().view(affine)
    return y * torch.sigmoid(y) if silu else y


def _norm(channels: int, groups: int, dtype, seed: int) -> torch.nn.GroupNorm:
    norm = torch.nn.GroupNorm(groups, channels, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(channels, generator=torch.Generator().manual_seed(seed)))
        norm.bias.copy_(torch.randn(channels, generator=torch.Generator().manual_seed(seed + 1)))
    return norm.to(DEVICE, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, groups, silu", [
    ((2, 64, 8, 8), 32, True),
    ((3, 40, 5, 7), 8, True),  # odd spatial size, 5 channels a group
    ((1, 96, 33), 32, False),  # 1-d spatial, plain norm
    ((2, 32, 1, 3), 32, True),  # three elements a group
])
def test_group_norm_silu_matches_fallback(shape, groups, silu, dtype):
    x = (_randn(*shape, seed=0) * 3 + 1).to(dtype)
    norm = _norm(shape[1], groups, dtype, seed=1)
    with torch.no_grad():
        got = group_norm_silu(x, norm, silu)
    assert registry.active("group_norm_silu", x)
    want = group_norm_silu_reference(x.float(), norm.weight.float(), norm.bias.float(), groups, 1e-5, silu)
    torch.testing.assert_close(got.float(), want, **TOL[dtype])


@pytest.mark.parametrize("layout", ["channels_last", "batch_slice", "channel_slice", "tokens_transposed", "crop"])
def test_group_norm_silu_reads_strided_input(layout):
    """Non-contiguous inputs without copies (the launch reads x itself), the output in x's memory format."""
    base = _randn(4, 48, 6, 10, seed=2) * 2 + 0.5
    x = {"channels_last": base.to(memory_format=torch.channels_last),
         "batch_slice": base[::2],
         "channel_slice": base[:, 8:40],  # 32 channels of 48
         "tokens_transposed": base.flatten(2).transpose(1, 2).contiguous().transpose(1, 2),  # b (h w) c -> b c (h w)
         "crop": base[:, :, 1:, 2:]}[layout]  # spatial dims that no longer merge: copied once
    assert not x.is_contiguous()
    norm = _norm(x.shape[1], 8, torch.float32, seed=3)
    launch, _ = group_norm_launch(x, norm.weight, norm.bias, 8, 1e-5, True)
    assert (launch.args[0].data_ptr() == x.data_ptr()) == (layout != "crop")
    with torch.no_grad():
        got = group_norm_silu(x, norm)
    if layout == "channels_last":
        assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, group_norm_silu_reference(x, norm.weight, norm.bias, 8, 1e-5), **TOL[torch.float32])
    torch.testing.assert_close(got.double(), group_norm64(x, norm.weight, norm.bias, 8, 1e-5, True), atol=5e-5,
                               rtol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b, fc, heads, length, ref_length, d", [
    (4, 2, 2, 16, 16, 8),
    (6, 3, 3, 37, 21, 40),  # head dim 40 (SD1.5's first level) padded inside the kernel; odd lengths
    (2, 1, 1, 70, 5, 20),  # more query rows than one block
    (3, 3, 2, 9, 33, 16),  # no uncond rows at all
])
def test_two_source_attention_matches_fallback(b, fc, heads, length, ref_length, d, dtype):
    q, k, v = (_randn(b, heads, length, d, seed=s, dtype=dtype) for s in (4, 5, 6))
    k_ref, v_ref = (_randn(2, heads, ref_length, d, seed=s, dtype=dtype) for s in (7, 8))  # a video's two entries
    index = ((torch.arange(fc) + 1) % 2).to(DEVICE)  # the entry each cond row reads
    got = two_source_attention(q, k, v, k_ref, v_ref, index)
    assert registry.active("two_source_attention", q)
    want = two_source_attention_reference(*(t.float() for t in (q, k, v, k_ref, v_ref)), index)
    torch.testing.assert_close(got.float(), want, **TOL[dtype])


def _heads(b: int, length: int, heads: int, d: int, seed: int) -> torch.Tensor:
    """A projection's (b, l, h·d) output viewed as (b, h, l, d), as the model passes it."""
    return _randn(b, length, heads * d, seed=seed).view(b, length, heads, d).transpose(1, 2)  # b l (h d) -> b h l d


@pytest.mark.parametrize("layout", ["head_views", "packed_kv", "d_strided", "sliced"])
def test_two_source_attention_reads_strided_operands(layout):
    b, fc, heads, length, ref_length, d = 5, 3, 2, 19, 11, 24
    q = _heads(b, length, heads, d, seed=9)
    if layout == "head_views":
        k, v = _heads(b, length, heads, d, seed=10), _heads(b, length, heads, d, seed=11)
        k_ref, v_ref = _heads(fc, ref_length, heads, d, seed=12), _heads(fc, ref_length, heads, d, seed=13)
    elif layout == "packed_kv":  # one (b, l, 2, h, d) projection for keys and values, reference frames every other
        k, v = _randn(b, length, 2, heads, d, seed=10).permute(2, 0, 3, 1, 4).unbind(0)  # -> 2 x b h l d
        k_ref, v_ref = _randn(2 * fc, ref_length, 2, heads, d, seed=12)[::2].permute(2, 0, 3, 1, 4).unbind(0)
    elif layout == "d_strided":  # head dim not the fastest-moving index
        k, v = (_randn(b, heads, d, length, seed=s).transpose(2, 3) for s in (10, 11))
        k_ref, v_ref = (_randn(fc, heads, d, ref_length, seed=s).transpose(2, 3) for s in (12, 13))
    else:  # head-dim slices of wider tensors
        k, v = (_randn(b, heads, length, d + 8, seed=s)[..., 4:4 + d] for s in (10, 11))
        k_ref, v_ref = (_randn(fc, heads, ref_length, d + 8, seed=s)[..., :d] for s in (12, 13))
    operands = (q, k, v, k_ref, v_ref, _entries(k_ref))
    assert not any(t.is_contiguous() for t in operands[:5])
    launch, out = two_source_attention_launch(*operands)
    assert all(a is t for a, t in zip(launch.args, operands, strict=False))  # the kernel reads the operands themselves
    got = two_source_attention(*operands)
    assert got.transpose(1, 2).is_contiguous()  # b h l d over b l h d memory: merging the heads is free
    torch.testing.assert_close(got, two_source_attention_reference(*operands), **TOL[torch.float32])
    torch.testing.assert_close(got.double(), two_source64(*operands), **TOL[torch.float32])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b, frames, length, heads, d, fused", [
    (2, 5, 37, 2, 40, True),  # odd frames and positions, head dim 40 padded to 64; q/k/v slices of one qkv
    (1, 7, 9, 3, 8, False),  # separate contiguous q/k/v
    (2, 2, 16, 1, 20, True),
    (1, 24, 3, 1, 16, True),  # the longest clips: 24 frames padded to 32
    (1, 1, 3, 2, 16, False),  # a single frame: the output is v
])
def test_temporal_attention_matches_fallback(b, frames, length, heads, d, fused, dtype):
    if fused:
        q, k, v = _randn(b, frames, length, 3, heads, d, seed=14, dtype=dtype).unbind(3)
    else:
        q, k, v = (_randn(b, frames, length, heads, d, seed=s, dtype=dtype) for s in (14, 15, 16))
    got = temporal_attention(q, k, v)
    assert registry.active("temporal_attention", q)
    want = temporal_attention_reference(q.float(), k.float(), v.float())
    torch.testing.assert_close(got.float(), want, **TOL[dtype])


@pytest.mark.parametrize("layout", ["position_major", "d_strided", "sliced"])
def test_temporal_attention_reads_strided_operands(layout):
    b, frames, length, heads, d = 2, 6, 7, 2, 12
    if layout == "position_major":  # (b l) f c memory, the layout of the unfused motion module
        q, k, v = (_randn(b, length, frames, heads, d, seed=s).transpose(1, 2) for s in (17, 18, 19))
    elif layout == "d_strided":
        q, k, v = (_randn(b, frames, length, d, heads, seed=s).transpose(3, 4) for s in (17, 18, 19))
    else:  # heads and head dim cut out of wider projections
        q, k, v = (_randn(b, frames, length, heads + 1, d + 4, seed=s)[:, :, :, 1:, :d] for s in (17, 18, 19))
    assert not any(t.is_contiguous() for t in (q, k, v))
    launch, _ = temporal_attention_launch(q, k, v)
    assert all(a is t for a, t in zip(launch.args, (q, k, v), strict=False))
    got = temporal_attention(q, k, v)
    torch.testing.assert_close(got, temporal_attention_reference(q, k, v), **TOL[torch.float32])
    torch.testing.assert_close(got.double(), temporal64(q, k, v), **TOL[torch.float32])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b, length, heads, t, d", [
    (2, 37, 2, 5, 40),  # odd rows and audio tokens, head dim 40
    (1, 9, 1, 1, 8),  # one audio token
    (2, 70, 1, 33, 20),  # more rows than one block, odd t
    (1, 5, 1, 100, 16),  # t over one key block: the online softmax
])
def test_audio_attention_matches_fallback(b, length, heads, t, d, dtype):
    q = _randn(b, length, 3 * heads, d, seed=20, dtype=dtype)
    k, v = _randn(b, t, 2, 3 * heads, d, seed=21, dtype=dtype).unbind(2)  # views of one kv tensor
    masks = (torch.rand(3, length, generator=torch.Generator().manual_seed(22)) * 2 - 0.5).to(DEVICE, dtype)
    got = audio_attention(q, k, v, masks)
    assert registry.active("audio_attention", q)
    want = audio_attention_reference(q.float(), k.float(), v.float(), masks.float())
    torch.testing.assert_close(got.float(), want, **TOL[dtype])


@pytest.mark.parametrize("layout", ["heads_major", "d_strided", "masks_transposed"])
def test_audio_attention_reads_strided_operands(layout):
    b, length, heads, t, d = 2, 13, 6, 5, 16
    masks = torch.rand(3, length, generator=torch.Generator().manual_seed(23)).to(DEVICE)
    if layout == "heads_major":  # (b, g·h, l, d) memory
        q = _randn(b, heads, length, d, seed=24).transpose(1, 2)
        k, v = (_randn(b, heads, t, d, seed=s).transpose(1, 2) for s in (25, 26))
    elif layout == "d_strided":
        q = _randn(b, length, d, heads, seed=24).transpose(2, 3)
        k, v = (_randn(b, t, d, heads, seed=s).transpose(2, 3) for s in (25, 26))
    else:  # masks stored (l, g); q/k/v cut out of wider tensors
        masks = masks.T.contiguous().T
        q = _randn(b, length + 3, heads, d, seed=24)[:, 3:]
        k, v = _randn(b, t, 3, heads, d, seed=25)[:, :, ::2].unbind(2)
    operands = (q, k, v, masks)
    assert not any(x.is_contiguous() for x in (q, k, v)) and (layout != "masks_transposed" or not masks.is_contiguous())
    launch, _ = audio_attention_launch(*operands)
    assert all(a is x for a, x in zip(launch.args, operands, strict=False))
    got = audio_attention(*operands)
    torch.testing.assert_close(got, audio_attention_reference(*operands), **TOL[torch.float32])
    torch.testing.assert_close(got.double(), audio64(*operands), **TOL[torch.float32])


def test_precision_policy_reaches_every_dot_product():
    """float32 dot products in IEEE float32 (no silent TF32) in both kernels that multiply matrices; operands
    outside the policy (float64, mixed dtypes) take the fallback."""
    x32 = _randn(2, 2, 8, 16, seed=27)
    q = _randn(2, 8, 3, 16, seed=28)
    k = _randn(2, 4, 3, 16, seed=29)
    launches = [two_source_attention_launch(x32, x32, x32, x32[1:], x32[1:], _entries(x32[1:]))[0],
                audio_attention_launch(q, k, k, torch.ones(3, 8, device=DEVICE))[0]]
    assert precision.DOT_PRECISION == "ieee"
    assert [launch.constants["PRECISION"] for launch in launches] == ["ieee", "ieee"]
    assert not registry.active("two_source_attention", x32.double())
    assert not registry.active("two_source_attention", x32, x32.half())
    assert registry.active("two_source_attention", x32, torch.zeros(3, dtype=torch.int64, device=DEVICE))
    x64 = x32.double()
    operands64 = (x64, x64, x64, x64[1:], x64[1:], _entries(x64[1:]))
    torch.testing.assert_close(two_source_attention(*operands64), two_source64(*operands64), atol=1e-12, rtol=1e-12)


# block sizes Triton refuses (tl.arange needs powers of two): a real compile failure of each real launch
BAD_TILES = {
    "group_norm_silu": lambda dtype, channels_per_group, positions, groups: (Tiles(24, 24), 1),
    "two_source_attention": lambda dtype, d: (Tiles(24, 16), 16),
    "temporal_attention": lambda dtype, frames, d: (Tiles(3, 8), 16),
    "audio_attention": lambda dtype, d, tokens: (Tiles(24, 16), 16),
}


@pytest.mark.parametrize("name", registry.KERNELS)
def test_failing_kernel_warns_once_and_falls_back(name, monkeypatch):
    x = _randn(2, 16, 3, 5, seed=30)
    q5, k5, v5 = _randn(3, 2, 4, 6, 2, 8, seed=31).unbind(0)
    q3 = _randn(2, 2, 6, 8, seed=32)
    masks = torch.rand(3, 6, generator=torch.Generator().manual_seed(33)).to(DEVICE)
    norm = _norm(16, 4, torch.float32, seed=34)
    module, call, want = {
        "group_norm_silu": (group_norm_module, lambda: group_norm_silu(x, norm),
                            lambda: group_norm64(x, norm.weight, norm.bias, 4, 1e-5, True)),
        "two_source_attention": (two_source_module,
                                 lambda: two_source_attention(q3, q3, q3, q3[1:], q3[1:], _entries(q3[1:])),
                                 lambda: two_source64(q3, q3, q3, q3[1:], q3[1:], _entries(q3[1:]))),
        "temporal_attention": (temporal_module, lambda: temporal_attention(q5, k5, v5), lambda: temporal64(q5, k5, v5)),
        "audio_attention": (audio_module, lambda: audio_attention(q5[0], k5[0], v5[0], masks[:2]),
                            lambda: audio64(q5[0], k5[0], v5[0], masks[:2])),
    }[name]
    monkeypatch.setattr(module, "tiles", BAD_TILES[name])
    with torch.no_grad(), pytest.warns(RuntimeWarning, match=f"kernel {name} failed and is switched off") as caught:
        got = call()
    assert len([w for w in caught if "switched off" in str(w.message)]) == 1
    assert name in registry.failures() and not registry.active(name, x)
    torch.testing.assert_close(got.double(), want(), atol=1e-5, rtol=1e-5)  # the fallback's result
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call neither warns nor tries the kernel again
        torch.testing.assert_close(call(), got, atol=0, rtol=0)


def test_registry_switches_and_scopes(monkeypatch):
    """Global switches and per-thread scopes (run in a thread of its own, outside this module's scopes)."""
    monkeypatch.setattr(registry, "_enabled", set())  # the global switches come back after the test

    def check():
        registry.enable("audio_attention")
        assert registry.enabled() == {"audio_attention"}
        registry.enable_all()
        assert registry.enabled() == set(registry.KERNELS)
        registry.disable()
        assert registry.enabled() == frozenset()
        with registry.using({"group_norm_silu"}):
            assert registry.enabled() == {"group_norm_silu"}
            seen = []
            other = threading.Thread(target=lambda: seen.append(registry.enabled()))
            other.start()
            other.join()
            assert seen == [frozenset()]  # scopes are per thread
            with registry.using(()):
                assert not registry.active("group_norm_silu", torch.zeros(1, device=DEVICE))
        assert registry.enabled() == frozenset()
        with pytest.raises(ValueError, match="unknown kernel"):
            registry.enable("flash")

    _in_fresh_thread(check)


@pytest.mark.skipif(DEVICE == "cuda", reason="CPU tensors: the interpreter scope")
def test_cpu_tensors_run_kernels_only_inside_the_interpreter_scope(monkeypatch):
    x = torch.zeros(1, 4, 2)

    def check():
        with registry.using(registry.KERNELS):
            assert not registry.active("group_norm_silu", x)
            with registry.interpret_on_cpu():
                assert registry.active("group_norm_silu", x)
            assert not registry.active("group_norm_silu", x)
            monkeypatch.delenv("TRITON_INTERPRET")
            with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"), registry.interpret_on_cpu():
                pass

    _in_fresh_thread(check)


def test_fallback_when_switched_off(monkeypatch):
    """Kernels off: no fused path runs, and every op's fallback equals its textbook float64 formula."""
    def fused_path(*args):
        raise AssertionError("a fused path ran with the kernels switched off")

    monkeypatch.setattr(TemporalAttention, "frame_major", fused_path)
    monkeypatch.setattr(AudioTransformerBlock, "stacked_fused", fused_path)
    x = _randn(1, 8, 4, 4, seed=35)
    norm = _norm(8, 4, torch.float32, seed=36)
    q, k, v = _randn(3, 1, 3, 5, 2, 8, seed=37).unbind(0)
    q3 = _randn(3, 2, 5, 8, seed=38)
    masks = torch.rand(2, 5, generator=torch.Generator().manual_seed(39)).to(DEVICE)
    tol = dict(atol=1e-6, rtol=1e-5)
    with registry.using(()), torch.no_grad():
        assert not any(registry.active(name, x) for name in registry.KERNELS)
        torch.testing.assert_close(group_norm_silu(x, norm).double(),
                                   group_norm64(x, norm.weight, norm.bias, 4, 1e-5, True), **tol)
        torch.testing.assert_close(temporal_attention(q, k, v).double(), temporal64(q, k, v), **tol)
        torch.testing.assert_close(audio_attention(q[0], k[0], v[0], masks).double(),
                                   audio64(q[0], k[0], v[0], masks), **tol)
        torch.testing.assert_close(two_source_attention(q3, q3, q3, q3[1:], q3[1:], _entries(q3[1:])).double(),
                                   two_source64(q3, q3, q3, q3[1:], q3[1:], _entries(q3[1:])), **tol)
        MotionModule(32, 2, 1, 1, 8).to(DEVICE)(_randn(4, 32, 2, 2, seed=40), 2)
        AudioTransformerBlock(16, 2, 8, 8, stacked=True).to(DEVICE)(
            _randn(1, 3, 16, seed=41), _randn(1, 2, 8, seed=42), torch.ones(3, 3, device=DEVICE), None)


def _randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere (the zero-initialised convs included), so every term of the output counts."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module.to(DEVICE).eval()


@pytest.mark.parametrize("frames, hh, ww, heads", [(5, 3, 7, 4), (2, 4, 4, 2)])
def test_motion_module_kernels_on_matches_off(frames, hh, ww, heads):
    module = _randomise(MotionModule(32, heads, num_layers=1, attention_blocks=2, max_len=24), 4)
    x = torch.randn(2 * frames, 32, hh, ww, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    assert registry.active("temporal_attention", x)
    with torch.no_grad():
        got = module(x, frames)
        with registry.using(()):
            want = module(x, frames)
            frame_major = module.transformer_blocks[0].attention_blocks[0].frame_major  # the layout alone
            h = torch.randn(2 * frames, hh * ww, 32).to(DEVICE)
            attention = module.transformer_blocks[0].attention_blocks[0]
            torch.testing.assert_close(frame_major(h, frames), attention(h, frames), **TOL[torch.float32])
    torch.testing.assert_close(got, want, **TOL[torch.float32])


@pytest.mark.parametrize("motion_scale", [None, (0.7, 1.3, -0.4)])
@pytest.mark.parametrize("length, t", [(37, 5), (16, 1)])
def test_stacked_audio_block_kernels_on_matches_off(motion_scale, length, t):
    block = _randomise(AudioTransformerBlock(32, 2, 16, 24, stacked=True), 6)
    g = torch.Generator().manual_seed(7)
    x, audio = torch.randn(2, length, 32, generator=g).to(DEVICE), torch.randn(2, t, 24, generator=g).to(DEVICE)
    masks = (torch.rand(3, length, generator=g) > 0.4).float().to(DEVICE)
    scale = None if motion_scale is None else torch.tensor(motion_scale, device=DEVICE)
    assert registry.active("audio_attention", x)
    with torch.no_grad():
        got = block(x, audio, masks, scale)
        with registry.using(()):
            want = block(x, audio, masks, scale)
            n = block.norm2(x)  # the folded algebra alone (plain-torch attention) against the formula
            attns = (block.attn2_0, block.attn2_1, block.attn2_2)
            convs = (block.zero_conv_full, block.zero_conv_face, block.zero_conv_lip)
            s = (1, 1, 1) if scale is None else scale
            formula = sum(s[i] * convs[i]((attns[i](n, audio) * masks[i, :, None]).mT[..., None])[..., 0].mT
                          for i in range(3))  # the convs on b c l 1 images
            torch.testing.assert_close(block.stacked_fused(n, audio, masks, scale), formula, **TOL[torch.float32])
    torch.testing.assert_close(got, want, **TOL[torch.float32])


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # the interpreter's sigmoid(-large) = 0, correct
def test_whole_tiny_model_with_every_kernel_matches_eager(tmp_path):
    """One guided step of the tiny model (CFG halves, reference K/V, motion frames in the mid block, stacked audio
    attention) with all four kernels vs without. Tolerance: a few times the float32 rounding noise of this random
    net, measured here as float32 vs float64 eager."""
    import copy

    from emo.checkpoints.model_dir import random_models
    from emo.config import RunConfig
    from emo.runtime.backend import TorchBackend
    from emo.runtime.renderer import Renderer
    from emo.sampling.conditioning import StepSchedule
    from emo.sampling.step_plan import GUIDED

    from .media_factory import PORTRAIT, voice, write_wav

    run = RunConfig(frames=4, motion_frames=2, steps=1, size=64)
    models = random_models()
    renderer = Renderer(TorchBackend(models, DEVICE, "fp32"))
    wav = write_wav(tmp_path / "voice.wav", voice(0.2))
    prepared = renderer.prepare(PORTRAIT, wav, run)

    def predict(backend: TorchBackend, dtype: torch.dtype) -> torch.Tensor:
        video = backend.prepare_video(prepared.portrait, run.motion_frames)
        motion = prepared.portrait.pixels.to(DEVICE, dtype).expand(run.motion_frames, -1, -1, -1)
        clip = backend.prepare_clip(video, motion, prepared.windows[:run.frames])
        x = torch.randn(1, 4, run.frames, 8, 8, generator=torch.Generator().manual_seed(0)).to(DEVICE, dtype)
        steps = StepSchedule(torch.tensor([999]), run, torch.device(DEVICE), dtype)
        return backend.step(clip, steps.inputs(x, 0), GUIDED).double()

    with registry.using(()):
        ref = predict(renderer.backend, torch.float32)
        exact = predict(TorchBackend(copy.deepcopy(models), DEVICE, torch.float64), torch.float64)
    with registry.using(registry.KERNELS):
        got = predict(renderer.backend, torch.float32)
    noise = (ref - exact).abs().max().item()
    assert 0 < noise < 1e-2
    assert (got - ref).abs().max().item() < 4 * noise + 1e-4, ((got - ref).abs().max().item(), noise)
