"""The lighter torch-fast step, checked on the CPU: the compiled step (inductor's C++ backend) and the q/k/v-fused
attention against eager, the FP8 linear layers' arithmetic by emulation against a float reference within the bound
E4M3's precision gives, and the refusals. What runs only on a GPU (torch._scaled_mm, CUDA graphs around compiled
code, the speed of any of it) is not covered here: bench/gpu_session.sh measures it."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from emo.calibration.linear_amax import fp8_scales, record_linear_amax
from emo.checkpoints.model_dir import random_models
from emo.config import RunConfig
from emo.errors import InputError
from emo.models.attention import Attention
from emo.runtime import compiled_step
from emo.runtime.backend import TorchBackend
from emo.runtime.factory import RendererSpec
from emo.runtime.fp8_convert import Fp8Scales, node_name
from emo.runtime.fp8_linear import E4M3_EPS, Fp8Conv1x1, Fp8Linear, fp8_capable, fp8_refusal
from emo.runtime.renderer import Renderer
from emo.runtime.torch_fast_backend import TorchFastBackend
from emo.sampling.step_plan import CONDITIONAL, GUIDED

RUN = RunConfig(frames=4, motion_frames=2, steps=2, size=64, fps=25)


@pytest.fixture(scope="module")
def prepared(speech_media):
    d = speech_media(0.2)
    return Renderer.random(device="cpu").prepare(d / "face.png", d / "voice.wav", RUN)


def _step(backend, prepared, plan=GUIDED) -> torch.Tensor:
    """One step of the first clip as `plan` says, in float64 for comparing."""
    from emo.sampling.conditioning import StepSchedule

    video = backend.prepare_video(prepared.portrait, RUN.motion_frames)
    motion = prepared.portrait.pixels.to(backend.device, backend.dtype).expand(RUN.motion_frames, -1, -1, -1)
    clip = backend.prepare_clip(video, motion, prepared.windows[:RUN.frames])
    steps = StepSchedule(torch.tensor([999]), RUN, backend.device, backend.dtype)
    x = torch.randn(1, 4, RUN.frames, 8, 8, generator=torch.Generator().manual_seed(0)).to(backend.dtype)
    return backend.step(clip, steps.inputs(x, 0, plan.halves), plan).double()


def _noise(prepared) -> float:
    """float32 eager vs float64 eager: the rounding noise of one step on this (random, amplifying) model."""
    ref = _step(TorchBackend(random_models(), "cpu", "fp32"), prepared)
    exact = _step(TorchBackend(random_models(), "cpu", torch.float64), prepared)
    return (ref - exact).abs().max().item()


def _compiled_vs_eager(prepared, tmp_path, monkeypatch) -> None:
    """The guided and the conditional-only step of the tiny model compiled, each its own static step, with q/k/v
    fused; both within a few times float32's own rounding noise of eager."""
    monkeypatch.setenv(compiled_step.CACHE_ENV, str(tmp_path / "inductor"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    eager = TorchBackend(random_models(), "cpu", "fp32")
    fast = TorchFastBackend(random_models(), "cpu", "fp32", kernels=(), compile="graph")
    noise = _noise(prepared)
    for plan in (GUIDED, CONDITIONAL):
        got, want = _step(fast, prepared, plan), _step(eager, prepared, plan)
        assert (got - want).abs().max().item() <= 4 * noise + 1e-5, plan
    assert fast.captures == 2


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("EMO_TEST_SLOW"), reason="about 30 s on 2 cores (dynamo traces the whole "
                    "step twice; a compiled block is checked by test_inductor_compiles_a_fused_attention_block): "
                    "set EMO_TEST_SLOW=1")
def test_compiled_step_traces_and_equals_eager(prepared, tmp_path, monkeypatch):
    """The whole step traced by dynamo (torch.compile's "eager" backend: no inductor code generation, which
    takes minutes for the whole UNet on the CPU): one graph per plan, no step logic lost in tracing."""
    monkeypatch.setattr(compiled_step, "COMPILER", "eager")
    torch._dynamo.reset()
    _compiled_vs_eager(prepared, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("EMO_TEST_INDUCTOR_STEP"), reason="about 4 minutes on 2 cores: set "
                    "EMO_TEST_INDUCTOR_STEP=1")
def test_inductor_step_equals_eager(prepared, tmp_path, monkeypatch):
    """The same with inductor's C++ code generation for the whole tiny UNet (opt-in: slow)."""
    torch._dynamo.reset()
    _compiled_vs_eager(prepared, tmp_path, monkeypatch)
    assert any((tmp_path / "inductor").iterdir())


def test_inductor_compiles_a_fused_attention_block(tmp_path, monkeypatch):
    """inductor's real C++ code for a small piece of the step (a transformer block with its q/k/v fused), with
    its kernels cached in the directory asked for; a second compile in a fresh dynamo state reuses that cache."""
    from emo.models.transformer import TransformerBlock

    monkeypatch.setenv(compiled_step.CACHE_ENV, str(tmp_path / "inductor"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, 8, context_dim=8).eval()
    x, context = torch.randn(2, 6, 16), torch.randn(2, 3, 8)
    with torch.no_grad():
        want = block(x, context)[0]
        assert block.attn1.fuse_qkv()
        torch._dynamo.reset()
        got = compiled_step.compile_step(lambda: block(x, context)[0], "graph")()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert any((tmp_path / "inductor").iterdir())


def test_fused_qkv_attention_equals_unfused():
    torch.manual_seed(0)
    attn = Attention(32, 4, 8)
    x, context = torch.randn(2, 10, 32), torch.randn(2, 5, 32)
    plain, cross = attn(x), attn(x, context)
    keys = set(attn.state_dict())
    assert attn.fuse_qkv()
    assert attn.__dict__["_qkv_weight"].shape == (96, 32)
    torch.testing.assert_close(attn(x), plain, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(attn(x, context), cross, atol=0, rtol=0)  # cross-attention: untouched
    assert set(attn.state_dict()) == keys  # no new state, names unchanged
    assert not Attention(32, 4, 8, context_dim=16).fuse_qkv()  # k/v of another width: nothing to fuse


def test_fused_qkv_backend_step_equals_eager(prepared):
    eager = _step(TorchBackend(random_models(), "cpu", "fp32"), prepared)
    fused = TorchFastBackend(random_models(), "cpu", "fp32", kernels=(), fuse_qkv=True)
    fused_count = sum("_qkv_weight" in m.__dict__ for m in fused.models.net.modules())
    assert fused_count > 0
    assert (_step(fused, prepared) - eager).abs().max().item() <= 4 * _noise(prepared) + 1e-5


def _e4m3_bound(x: torch.Tensor, layer: Fp8Linear, w: torch.Tensor) -> torch.Tensor:
    """Per output element: |Σ x̂ŵ − Σ xw| ≤ Σ (|x||Δw| + |Δx||w| + |Δx||Δw|) with |Δ| ≤ relative u·|v| + half the
    smallest subnormal step times the scale (values under E4M3's normal range), u = 2⁻⁴ (3 mantissa bits)."""
    u = E4M3_EPS / 2
    sub = 2.0 ** -10  # half of E4M3's smallest subnormal, 2^-9
    dx = u * x.abs() + sub * layer.input_scale
    scale = layer.weight_scale[:, None] if layer.weight_scale.dim() else layer.weight_scale
    dw = u * w.abs() + sub * scale
    return x.abs() @ dw.t() + dx @ w.abs().t() + dx @ dw.t()


@pytest.mark.parametrize("per_channel", [True, False])
def test_fp8_linear_emulation_within_e4m3_bound(per_channel):
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    with torch.no_grad():
        linear.weight[:8] *= 20  # channels of very different ranges: per-channel scales matter
    x = torch.randn(3, 7, 64) * 3
    layer = Fp8Linear.from_linear(linear, float(x.abs().max()), per_channel, emulate=True)
    want = linear(x)
    err = (layer(x) - want).abs()
    bound = _e4m3_bound(x.reshape(-1, 64), layer, linear.weight.detach()).reshape(err.shape)
    assert (err <= bound * 1.01 + 1e-5).all(), (err - bound).max()
    rel = (err.norm() / want.norm()).item()
    assert 1e-4 < rel < 0.05, rel  # really quantized, and close
    assert layer.weight_fp8.dtype == torch.float8_e4m3fn
    assert layer.weight_scale.shape == ((48,) if per_channel else ())


def test_fp8_conv1x1_equals_its_linear():
    torch.manual_seed(1)
    conv = nn.Conv2d(16, 24, 1)
    x = torch.randn(2, 16, 5, 6)
    fp8 = Fp8Conv1x1.from_conv(conv, float(x.abs().max()), emulate=True)
    as_linear = Fp8Linear(conv.weight.flatten(1), conv.bias, float(x.abs().max()), emulate=True)
    want = as_linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # b c h w -> b h w c -> b o h w
    torch.testing.assert_close(fp8(x), want)
    assert (fp8(x) - conv(x)).abs().max() < 0.05 * conv(x).abs().max()


def test_fp8_step_by_emulation_follows_the_policy(prepared, tmp_path):
    """The denoiser's amax recorded from an eager step, written as a scales file with the default policy; the
    torch-fast step with those layers in (emulated) FP8 runs end to end, and the policy's high-precision layers
    (time embedding, first/last conv, audio modules) are not quantized."""
    eager = TorchBackend(random_models(), "cpu", "fp32")
    denoiser = eager.models.net.denoising_unet
    want = {}
    amax = record_linear_amax(denoiser, lambda: want.setdefault("step", _step(eager, prepared)))
    scales = fp8_scales(amax)
    path = tmp_path / "scales.json"
    path.write_text(json.dumps(scales.to_json()))
    loaded = Fp8Scales.load(path)
    fast = TorchFastBackend(random_models(), "cpu", "fp32", kernels=(), fp8=loaded, fp8_emulate=True)
    report = fast.fp8
    assert report.quantized and not report.uncalibrated
    assert not any(n.startswith(("time_embedding", "conv_in", "conv_out")) or "audio_modules" in n
                   or "time_emb_proj" in n for n in report.quantized)
    assert any("audio_modules" in n for n in report.kept) and any("time_emb_proj" in n for n in report.kept)
    got, ref = _step(fast, prepared), want["step"]
    rel = ((got - ref).norm() / ref.norm()).item()
    assert 0 < rel < 0.6, rel  # random weights amplify rounding (~0.4 here): fidelity is measured on the demo model


@pytest.mark.parametrize("per_channel", [True, False])
def test_fp8_qkv_fuse_into_one_fp8_gemm(per_channel):
    """Self-attention's three FP8 projections (one input scale: one input) become one FP8 layer over the stacked
    8-bit weights, computing what the three did; cross-attention and projections of other input scales stay."""
    torch.manual_seed(2)
    attn = Attention(32, 4, 8)
    x = torch.randn(2, 10, 32)
    amax = float(x.abs().max())
    for name in ("to_q", "to_k", "to_v"):
        setattr(attn, name, Fp8Linear.from_linear(getattr(attn, name), amax, per_channel, emulate=True))
    separate = attn(x)
    assert attn.fuse_qkv()
    fused = attn.__dict__["_qkv_fp8"]
    assert fused.weight_fp8.dtype == torch.float8_e4m3fn and fused.weight_fp8.shape == (96, 32)
    assert torch.equal(fused.weight_fp8.view(torch.uint8),
                       torch.cat([getattr(attn, n).weight_fp8 for n in ("to_q", "to_k", "to_v")]).view(torch.uint8))
    torch.testing.assert_close(attn(x), separate, atol=1e-6, rtol=1e-5)
    attn.to_k = Fp8Linear.from_linear(nn.Linear(32, 32, bias=False), 2 * amax, per_channel, emulate=True)
    assert not attn.fuse_qkv() and "_qkv_fp8" not in attn.__dict__  # another input scale: left separate


def test_node_names_match_the_exporters_scopes():
    assert node_name("audio_modules.0.attn1.to_q", nn.Linear(1, 1)) == "/denoiser/audio_modules.0/attn1/to_q/Gemm"
    assert node_name("down_blocks.1.resnets.0.conv_shortcut", nn.Conv2d(1, 1, 1)) == (
        "/denoiser/down_blocks.1/resnets.0/conv_shortcut/Conv")


def test_scaled_mm_only_on_fp8_gpus(monkeypatch):
    """The real FP8 GEMM is chosen only on CUDA with compute capability >= 8.9; checked without running it."""
    assert not fp8_capable("cpu")
    assert "this is the cpu" in fp8_refusal("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    for capability, capable in (((8, 0), False), ((8, 6), False), ((8, 9), True), ((9, 0), True), ((12, 0), True)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert fp8_capable("cuda") is capable
        assert (fp8_refusal("cuda") is None) is capable
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert fp8_refusal("cuda:0") == ("FP8 matmuls need compute capability >= 8.9 (Ada, Hopper); Fake GPU is 8.0 "
                                     "(use fp16 or bf16)")


def test_refusals(tmp_path):
    scales = Fp8Scales({}, ())
    with pytest.raises(InputError, match="^FP8 matmuls need a CUDA GPU .* this is the cpu$"):
        TorchFastBackend(random_models(), "cpu", "fp32", fp8=scales)
    with pytest.raises(ValueError, match="unknown compile mode"):
        TorchFastBackend(random_models(), "cpu", "fp32", compile="max-autotune")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(InputError, match="not an FP8 scales file"):
        Fp8Scales.load(bad)
    spec = RendererSpec(random="tiny", backend="torch-fast", device="cpu", fast_on_cpu=True)
    assert spec.check() == "torch-fast"
    with pytest.raises(InputError, match="^FP8 matmuls need a CUDA GPU"):
        RendererSpec(random="tiny", backend="torch-fast", device="cpu", fast_on_cpu=True, fp8_scales="s.json").check()
    with pytest.raises(InputError, match="torch-fast"):
        RendererSpec(random="tiny", backend="torch", device="cpu", compile="graph").check()
    with pytest.raises(InputError, match="unknown compile mode"):
        RendererSpec(random="tiny", backend="torch-fast", device="cpu", fast_on_cpu=True, compile="x").check()


def test_inductor_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(compiled_step.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compiled_step.inductor_cache_dir() == tmp_path / "emo-runtime" / "inductor"
    monkeypatch.setenv(compiled_step.CACHE_ENV, str(tmp_path / "mine"))
    assert compiled_step.inductor_cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "theirs"))
    assert compiled_step.use_inductor_cache() == tmp_path / "theirs"  # the user's own setting wins
    np.testing.assert_equal((tmp_path / "theirs").is_dir(), True)
