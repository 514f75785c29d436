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
from emo.kernels.audio_attention import audio_attention, audio_attention_reference  # noqa: E402
from emo.kernels.group_norm import group_norm_silu, group_norm_silu_reference  # noqa: E402
from emo.kernels.temporal_attention import temporal_attention, temporal_attention_reference  # noqa: E402
from emo.kernels.two_source_attention import two_source_attention, two_source_attention_reference  # noqa: E402
from emo.models.audio_attention import AudioTransformerBlock  # noqa: E402
from emo.models.motion_module import MotionModule, TemporalAttention  # noqa: E402

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
    k_ref, v_ref = (torch.randn(2, heads, ref_length, d, generator=g).to(DEVICE, dtype) for _ in range(2))  # entries
    index = ((torch.arange(fc) + 1) % 2).to(DEVICE)  # the entry each cond row reads
    got = two_source_attention(q, k, v, k_ref, v_ref, index)
    assert registry.active("two_source_attention", q)
    want = two_source_attention_reference(*(t.float() for t in (q, k, v, k_ref, v_ref)), index)
    torch.testing.assert_close(got.float(), want, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b, frames, length, heads, d, fused", [
    (2, 5, 37, 2, 40, True),  # odd frames and positions, head dim 40 padded to 64; q/k/v slices of one qkv
    (1, 7, 9, 3, 8, False),  # separate contiguous q/k/v
    (2, 2, 16, 1, 20, True),
    (1, 24, 3, 1, 16, True),  # the longest clips: 24 frames padded to 32
    (1, 1, 3, 2, 16, False),  # a single frame: the output is v
])
def test_temporal_attention_matches_fallback(b, frames, length, heads, d, fused, dtype):
    g = torch.Generator().manual_seed(2)
    if fused:
        q, k, v = torch.randn(b, frames, length, 3, heads, d, generator=g).to(DEVICE, dtype).unbind(3)
    else:
        q, k, v = (torch.randn(b, frames, length, heads, d, generator=g).to(DEVICE, dtype) for _ in range(3))
    got = temporal_attention(q, k, v)
    assert registry.active("temporal_attention", q)
    want = temporal_attention_reference(q.float(), k.float(), v.float())
    torch.testing.assert_close(got.float(), want, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b, length, heads, t, d", [
    (2, 37, 2, 5, 40),  # odd rows and audio tokens, head dim 40
    (1, 9, 1, 1, 8),  # one audio token
    (2, 70, 1, 33, 20),  # more rows than one block, odd t
    (1, 5, 1, 100, 16),  # t over one key block: the online softmax
])
def test_audio_attention_matches_fallback(b, length, heads, t, d, dtype):
    g = torch.Generator().manual_seed(3)
    q = torch.randn(b, length, 3 * heads, d, generator=g).to(DEVICE, dtype)
    k, v = torch.randn(b, t, 2, 3 * heads, d, generator=g).to(DEVICE, dtype).unbind(2)  # views of one kv tensor
    masks = (torch.rand(3, length, generator=g) * 2 - 0.5).to(DEVICE, dtype)
    got = audio_attention(q, k, v, masks)
    assert registry.active("audio_attention", q)
    want = audio_attention_reference(q.float(), k.float(), v.float(), masks.float())
    torch.testing.assert_close(got.float(), want, **TOL[dtype])


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
            torch.testing.assert_close(frame_major(h, frames),
                                       module.transformer_blocks[0].attention_blocks[0](h, frames), **TOL[torch.float32])
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


def test_fallback_when_switched_off(monkeypatch):
    x = torch.randn(1, 8, 4, 4)
    norm = torch.nn.GroupNorm(4, 8)

    def fused_path(*args):
        raise AssertionError("a fused path ran with the kernels switched off")

    monkeypatch.setattr(TemporalAttention, "frame_major", fused_path)
    monkeypatch.setattr(AudioTransformerBlock, "stacked_fused", fused_path)
    q, k, v = torch.randn(3, 1, 3, 5, 2, 8).unbind(0)
    with registry.using(()):
        assert not any(registry.active(name, x) for name in registry.KERNELS)
        torch.testing.assert_close(group_norm_silu(x, norm), torch.nn.functional.silu(norm(x)), atol=0, rtol=0)
        torch.testing.assert_close(temporal_attention(q, k, v), temporal_attention_reference(q, k, v), atol=0, rtol=0)
        masks = torch.rand(2, 5)
        torch.testing.assert_close(audio_attention(q[0], k[0], v[0], masks),
                                   audio_attention_reference(q[0], k[0], v[0], masks), atol=0, rtol=0)
        MotionModule(32, 2, 1, 1, 8)(torch.randn(4, 32, 2, 2), 2)
        AudioTransformerBlock(16, 2, 8, 8, stacked=True)(torch.randn(1, 3, 16), torch.randn(1, 2, 8), torch.ones(3, 3),
                                                          None)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # the interpreter's sigmoid(-large) = 0, correct
def test_whole_tiny_model_with_every_kernel_matches_eager(tmp_path):
    """One guided step of the tiny model (CFG halves, reference K/V, motion frames in the mid block, stacked audio
    attention) with all four kernels vs without. Tolerance: a few times the float32 rounding noise of this random
    net, measured here as float32 vs float64 eager."""
    import copy

    from emo.config import RunConfig
    from emo.runtime.backend import TorchBackend
    from emo.runtime.models import demo_models
    from emo.runtime.renderer import Renderer
    from emo.sampling.conditioning import StepSchedule

    from .media_factory import PORTRAIT, voice, write_wav

    run = RunConfig(frames=4, motion_frames=2, steps=1, size=64)
    models = demo_models()
    renderer = Renderer(TorchBackend(models, DEVICE, "fp32"))
    wav = write_wav(tmp_path / "voice.wav", voice(0.2))
    prepared = renderer.prepare(PORTRAIT, wav, run)

    def predict(backend: TorchBackend, dtype: torch.dtype) -> torch.Tensor:
        video = backend.prepare_video(prepared.portrait, run.motion_frames)
        motion = prepared.portrait.pixels.to(DEVICE, dtype).expand(run.motion_frames, -1, -1, -1)
        clip = backend.prepare_clip(video, motion, prepared.windows[:run.frames])
        x = torch.randn(1, 4, run.frames, 8, 8, generator=torch.Generator().manual_seed(0)).to(DEVICE, dtype)
        steps = StepSchedule(torch.tensor([999]), run, torch.device(DEVICE), dtype)
        return backend.step(clip, steps.inputs(x, 0)).double()

    with registry.using(()):
        ref = predict(renderer.backend, torch.float32)
        exact = predict(TorchBackend(copy.deepcopy(models), DEVICE, torch.float64), torch.float64)
    with registry.using(registry.KERNELS):
        got = predict(renderer.backend, torch.float32)
    noise = (ref - exact).abs().max().item()
    assert 0 < noise < 1e-2
    assert (got - ref).abs().max().item() < 4 * noise + 1e-4, ((got - ref).abs().max().item(), noise)
