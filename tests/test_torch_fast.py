"""torch-fast: the static-buffer step (CUDA graphs on a GPU) against eager torch, its shape-keyed graph cache, the
overlapped decode, and emo-bench timing the renderer's loop."""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from emo.checkpoints.model_dir import random_models
from emo.config import RunConfig
from emo.kernels import registry
from emo.runtime.backend import TorchBackend
from emo.runtime.renderer import Renderer
from emo.runtime.torch_fast_backend import TorchFastBackend

RUN = RunConfig(frames=4, motion_frames=2, steps=2, size=64, fps=25)
CUDA_DTYPES = ["fp16", "bf16"]


@pytest.fixture(scope="module")
def media(speech_media):
    d = speech_media(0.44)  # 11 frames: 3 clips
    return d / "face.png", d / "voice.wav"


def _frames(renderer, media, run=RUN, seed=5):
    prepared = renderer.prepare(*media, run)
    return np.concatenate(list(renderer.stream(prepared, run, seed=seed)))


def test_static_buffer_path_equals_eager_on_cpu(media):
    """Same step through persistent buffers rebound per clip: identical to eager across chained clips and videos."""
    eager = Renderer.random(device="cpu")
    fast = Renderer(TorchFastBackend(random_models(), "cpu", "fp32", kernels=()))
    assert not fast.backend.cuda_graphs
    ref = _frames(eager, media)
    np.testing.assert_allclose(_frames(fast, media), ref, atol=1e-6)
    np.testing.assert_allclose(_frames(fast, media), ref, atol=1e-6)  # second video reuses the buffers
    other = RunConfig(frames=3, motion_frames=1, steps=2, size=64, fps=25)
    np.testing.assert_allclose(_frames(fast, media, other), _frames(eager, media, other), atol=1e-6)
    assert fast.backend.captures == 2  # one static step per shape


def test_new_guidance_or_motion_scale_reuses_the_captured_step(media):
    """The step is keyed by shape only: guidance and motion scale are static buffers filled before each call, so
    changing them between videos builds nothing new, and the new values really reach the model."""
    eager = Renderer.random(device="cpu")
    fast = Renderer(TorchFastBackend(random_models(), "cpu", "fp32", kernels=()))
    first = _frames(fast, media)
    assert fast.backend.captures == 1
    for change in (dict(guidance_scale=2.0), dict(motion_scale=(0.5, 1.5, 0.8)), dict(guidance_scale=5.0,
                                                                                      motion_scale=(1.0, 0.0, 2.0))):
        run = dataclasses.replace(RUN, **change)
        got = _frames(fast, media, run)
        np.testing.assert_allclose(got, _frames(eager, media, run), atol=1e-6)
        assert np.abs(got - first).max() > 1e-3  # the setting changed the frames
    assert fast.backend.captures == 1


def test_graph_cache_is_bounded_least_recently_used_first(media):
    fast = Renderer(TorchFastBackend(random_models(), "cpu", "fp32", kernels=(), max_graphs=1))
    shorter = dataclasses.replace(RUN, frames=3, motion_frames=1)
    for run, captures in ((RUN, 1), (shorter, 2), (RUN, 3)):  # each new shape evicts the other
        _frames(fast, media, run)
        assert fast.backend.captures == captures and len(fast.backend.step_cache.steps) == 1
    with pytest.raises(ValueError, match="max_graphs"):
        TorchFastBackend(random_models(), "cpu", "fp32", kernels=(), max_graphs=0)


def _one_step(backend, prepared) -> torch.Tensor:
    """One guided step of the first clip, in float64 for comparing."""
    from emo.sampling.conditioning import StepSchedule
    from emo.sampling.step_plan import GUIDED

    video = backend.prepare_video(prepared.portrait, RUN.motion_frames)
    motion = prepared.portrait.pixels.to(backend.device, backend.dtype).expand(RUN.motion_frames, -1, -1, -1)
    clip = backend.prepare_clip(video, motion, prepared.windows[:RUN.frames])
    steps = StepSchedule(torch.tensor([999]), RUN, backend.device, backend.dtype)
    x = torch.randn(1, 4, RUN.frames, 8, 8, generator=torch.Generator().manual_seed(0)).to(backend.dtype)
    return backend.step(clip, steps.inputs(x, 0), GUIDED).double()


def test_channels_last_only_changes_the_rounding(media):
    """NHWC convolutions (opt-in, for GPUs) change the memory layout and so the summation order, nothing else:
    one guided step stays within a few times the float32 rounding noise (float32 vs float64 eager)."""
    prepared = Renderer.random(device="cpu").prepare(*media, RUN)
    ref = _one_step(TorchBackend(random_models(), "cpu", "fp32"), prepared)
    exact = _one_step(TorchBackend(random_models(), "cpu", torch.float64), prepared)
    nhwc = _one_step(TorchFastBackend(random_models(), "cpu", "fp32", kernels=(), channels_last=True), prepared)
    noise = (ref - exact).abs().max().item()
    assert 0 < noise < 1e-2
    assert (nhwc - ref).abs().max().item() <= 4 * noise + 1e-5, ((nhwc - ref).abs().max().item(), noise)


def test_cuda_graphs_refused_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        TorchFastBackend(random_models(), "cpu", "fp32", cuda_graphs=True)
    with pytest.raises(ValueError, match="overlapped decoding needs a CUDA device"):
        TorchFastBackend(random_models(), "cpu", "fp32", overlap_decode=True)


def _stream_events(renderer: Renderer, prepared) -> tuple[list[np.ndarray], list[str]]:
    """The clips a stream yields, and the order of its stages (the renderer's timer hook) and of the clips'
    arrival ("got k": a clip of k frames reached the caller)."""
    events: list[str] = []

    @contextmanager
    def timer(stage: str):
        events.append(stage)
        yield

    renderer.timer = timer
    clips = []
    for clip in renderer.stream(prepared, RUN, seed=5):
        events.append(f"got {len(clip)}")
        clips.append(clip)
    return clips, events


def test_pipelined_stream_yields_the_same_clips_one_late(media):
    """A pipelined backend's clip c reaches the caller only once clip c + 1 has been denoised and its decode
    started (the last clip at the end): the same frames, per-clip sizes and trimming as a plain backend's."""
    plain = Renderer.random(device="cpu")
    piped = Renderer.random(device="cpu")
    piped.backend.pipelined = True  # the bookkeeping of the overlapped path, with a synchronous decode
    prepared = plain.prepare(*media, RUN)
    want, plain_events = _stream_events(plain, prepared)
    got, piped_events = _stream_events(piped, prepared)
    denoise = ["clip", *["step"] * RUN.steps, "decode"]
    deliver = ["frames", "consumer"]
    assert plain_events == ["reference", *denoise, *deliver, "got 4", *denoise, *deliver, "got 4",
                            *denoise, *deliver, "got 3"]
    assert piped_events == ["reference", *denoise, *denoise, *deliver, "got 4", *denoise, *deliver, "got 4",
                            *deliver, "got 3"]
    assert [len(c) for c in got] == [len(c) for c in want] == [4, 4, 3]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bench_times_the_renderer_loop_side_by_side(tmp_path):
    """emo-bench on the CPU (tiny preset): both backends through the renderer's own loop, every stage, fps,
    memory, environment, command; the JSON names the backends as emo-run does."""
    import json

    from emo.cli.bench import main

    out = tmp_path / "bench.json"
    assert main(["--preset", "tiny", "--device", "cpu", "--clips", "2", "--warmup", "1", "--steps", "2",
                 "--frames", "4", "--size", "64", "--profile", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["complete"] and set(report["results"]) == {"torch", "torch-fast"}
    assert report["speedup_fps"]["torch-fast"] > 0
    for r in report["results"].values():
        assert r["frames"] == 8 and r["fps"] > 0 and r["peak_memory_bytes"] > 0
        stages = r["stages"]
        assert {"reference", "clip", "step", "decode", "frames", "consumer"} <= set(stages)
        assert stages["step"]["wall"]["n"] == 4 and stages["clip"]["wall"]["n"] == 2  # 2 clips of 2 steps
        assert stages["reference"]["wall"]["n"] == 1  # once per video
        assert r["profile"] and {"name", "calls", "device_us", "self_cpu_us"} <= set(r["profile"][0])
    assert report["results"]["torch-fast"]["captures"] == {"warmup": 1, "timed": 0}
    assert {"device", "torch", "python"} <= set(report["environment"]) and report["command"]


def _cuda_frames(backend, media, run=RUN):
    return _frames(Renderer(backend), media, run)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", CUDA_DTYPES)
def test_cuda_graph_fast_path_within_the_low_precision_noise(media, dtype):
    """torch-fast (graphs, kernels, overlapped decode) and eager, both in `dtype`, against eager fp32 (TF32 off):
    the fast path may differ from fp32 by a few times what eager's own rounding costs, not more."""
    ref = _cuda_frames(TorchBackend(random_models(), "cuda", "fp32"), media)
    eager = _cuda_frames(TorchBackend(random_models(), "cuda", dtype), media)
    fast_backend = TorchFastBackend(random_models(), "cuda", dtype, kernels=registry.KERNELS)  # every kernel on
    assert fast_backend.cuda_graphs and fast_backend.pipelined
    fast = _cuda_frames(fast_backend, media)
    noise = np.abs(eager - ref).max()  # the tiny random net amplifies rounding: 0.36 in fp16 on an H200
    assert noise > 0 and np.isfinite(fast).all()
    assert np.abs(fast - ref).max() <= 4 * noise + 1e-3, (np.abs(fast - ref).max(), noise)


@pytest.mark.cuda
def test_cuda_graphs_replay_new_settings_without_capturing(media):
    """A graph captured with one guidance/motion scale, replayed with others, gives what a graph captured with those
    others gives (the same kernels either way: the comparison is not blurred by fp16 kernel-vs-eager noise)."""
    backend = TorchFastBackend(random_models(), "cuda", "fp16")
    _cuda_frames(backend, media)
    assert backend.captures == 1 and next(iter(backend.step_cache.steps.values())).graph is not None
    other = dataclasses.replace(RUN, guidance_scale=2.0, motion_scale=(0.5, 1.5, 0.8))
    got = _cuda_frames(backend, media, other)
    assert backend.captures == 1
    fresh = TorchFastBackend(random_models(), "cuda", "fp16")
    want = _cuda_frames(fresh, media, other)
    assert fresh.captures == 1
    assert np.abs(got - want).max() < 1e-3
    assert np.abs(got - _cuda_frames(backend, media)).max() > 1e-2  # the new settings did change the frames


@pytest.mark.cuda
def test_overlapped_decode_matches_synchronous_decode(media):
    sync = Renderer(TorchFastBackend(random_models(), "cuda", "fp16", overlap_decode=False))
    overlapped = Renderer(TorchFastBackend(random_models(), "cuda", "fp16", overlap_decode=True))
    np.testing.assert_allclose(_frames(overlapped, media), _frames(sync, media), atol=2e-3)


@pytest.mark.cuda
@pytest.mark.parametrize("fast", [False, True])
def test_a_step_never_waits_for_the_host(media, fast):
    """No host sync inside a denoising step (eager and torch-fast): CUDA's sync debug mode raises on any."""
    from emo.sampling.conditioning import StepSchedule
    from emo.sampling.ddim import DDIM
    from emo.sampling.step_plan import GUIDED

    backend = (TorchFastBackend if fast else TorchBackend)(random_models(), "cuda", "fp16")
    renderer = Renderer(backend)
    prepared = renderer.prepare(*media, RUN)
    video = backend.prepare_video(prepared.portrait, RUN.motion_frames)
    motion = prepared.portrait.pixels.to(backend.device, backend.dtype).expand(RUN.motion_frames, -1, -1, -1)
    clip = backend.prepare_clip(video, motion, prepared.windows[:RUN.frames])
    steps = StepSchedule(DDIM(backend.cfg.scheduler, RUN.steps).timesteps, RUN, backend.device, backend.dtype)
    x = torch.randn(1, 4, RUN.frames, 8, 8, device="cuda", dtype=backend.dtype)
    backend.step(clip, steps.inputs(x, 0), GUIDED)  # first call: capture / cuDNN autotuning may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(RUN.steps):
            backend.step(clip, steps.inputs(x, i), GUIDED)
    finally:
        torch.cuda.set_sync_debug_mode("default")
