"""The tensorrt backend on a GPU: the tiny model's plans (the session's `tiny_plans`, built for this GPU) against
the onnxruntime backend on the same export (`tiny_export`), component by component and as a whole render, and
against eager torch on the weights it was exported from. Skipped where no TensorRT runtime can run."""
from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
import torch

from emo.cli.run import main as run_main
from emo.config import PRESETS, RunOptions
from emo.validation import DEFAULT_SEED

from .media_factory import PORTRAIT, SPEECH

pytestmark = [pytest.mark.trt, pytest.mark.cuda]

RENDER = ["--size", "128", "--steps", "3", "--frames-per-clip", "4", "--motion-frames", "2"]
RENDER_RUN = RunOptions(steps=3, size=128, frames=4, motion_frames=2).apply(PRESETS["demo"].run)  # --demo + RENDER


@pytest.fixture(scope="module")
def dirs(tiny_plans, tiny_export):
    return tiny_export, tiny_plans


def _render(tmp_path, *args: str) -> np.ndarray:
    out = tmp_path / f"{args[1]}.npy"
    with redirect_stderr(io.StringIO()) as err, redirect_stdout(io.StringIO()):
        rc = run_main(["--demo", "--quiet", *RENDER, "-o", str(tmp_path / f"{args[1]}.mp4"), "--frames-out",
                       str(out), *args])
    assert rc == 0, err.getvalue()
    return np.load(out)


def test_render_matches_onnxruntime(dirs, tmp_path):
    """Whole render (3 clips of the demo voice, CUDA-graph replay of every step) vs ONNX Runtime, fp32 graphs."""
    export, plans = dirs
    ort = _render(tmp_path, "--backend", "onnxruntime", "--engine-dir", str(export), "--device", "cpu")
    trt = _render(tmp_path, "--backend", "tensorrt", "--engine-dir", str(plans))
    assert trt.shape == ort.shape
    assert float(np.abs(trt - ort).max()) <= 2e-2  # TF32-class matmuls on the GPU, fp32 on the CPU


def test_auto_picks_tensorrt_for_plans_on_a_gpu(dirs, tmp_path):
    """emo-run given only the plan directory renders the demo media as eager torch does on the exported weights
    (fp32 on the GPU, TF32 off), within the tensorrt backend's TF32-class tolerance."""
    from emo.runtime.renderer import Renderer

    _, plans = dirs
    frames = _render(tmp_path, "--engine-dir", str(plans))
    assert frames.shape[1:] == (128, 128, 3)
    Renderer.random(device="cuda").render(PORTRAIT, SPEECH, tmp_path / "torch.mp4", RENDER_RUN, seed=DEFAULT_SEED,
                                          frames_out=tmp_path / "torch.npy")
    ref = np.load(tmp_path / "torch.npy")
    assert frames.shape == ref.shape and ref.std() > 0.01
    assert float(np.abs(frames - ref).max()) <= 2e-2


def _steps(backend, prepared, run, latents: torch.Tensor) -> list[torch.Tensor]:
    """The guided steps of a first clip through the step protocol, as float32 on the host."""
    from emo.sampling.conditioning import StepSchedule
    from emo.sampling.ddim import DDIM
    from emo.sampling.step_plan import GUIDED

    video = backend.prepare_video(prepared.portrait, run.motion_frames)
    motion = prepared.portrait.pixels.to(backend.device, backend.dtype).expand(run.motion_frames, -1, -1, -1)
    clip = backend.prepare_clip(video, motion, prepared.windows[:run.frames])
    schedule = StepSchedule(DDIM(backend.cfg.scheduler, run.steps).timesteps, run, backend.device,
                            backend.dtype)
    x = latents.to(backend.device, backend.dtype)
    return [backend.step(clip, schedule.inputs(x, i), GUIDED).float().cpu() for i in range(run.steps)]


def _prepared(backend, run):
    from emo.runtime.renderer import Renderer

    return Renderer(backend).prepare(PORTRAIT, SPEECH, run)


def test_capture_and_eager_enqueue_agree(dirs):
    """The replayed CUDA graph gives exactly what a plain enqueue of the same context gives, step after step, and
    one step of the tensorrt backend matches the onnxruntime backend's on the same export."""
    from dataclasses import replace

    from emo.config import PRESETS
    from emo.runtime.onnxruntime_backend import OnnxRuntimeBackend
    from emo.runtime.tensorrt_backend import TensorRTBackend

    export, plans = dirs
    graphs, eager = TensorRTBackend(plans), TensorRTBackend(plans, cuda_graphs=False)
    run = replace(PRESETS["tiny"].run, frames=4, motion_frames=2, steps=3)
    prepared = _prepared(graphs, run)
    lat = run.size // graphs.cfg.vae.downscale
    latents = torch.randn(1, 4, run.frames, lat, lat, generator=torch.Generator().manual_seed(0))
    got, plain = _steps(graphs, prepared, run, latents), _steps(eager, prepared, run, latents)
    assert graphs.captures == 1 and next(iter(graphs.step_cache.steps.values())).graph is not None
    assert eager.captures == 1 and next(iter(eager.step_cache.steps.values())).graph is None
    for a, b in zip(got, plain, strict=True):
        assert torch.equal(a, b)
    ort = _steps(OnnxRuntimeBackend(export), prepared, run, latents)
    for a, b in zip(got, ort, strict=True):
        assert float((a - b).abs().max()) <= 2e-2 * max(1.0, float(b.abs().max()))  # TF32 on the GPU


def test_graph_per_shape_bounded_and_settings_replayed(dirs, tmp_path):
    """One captured step per shape (frames, size, motion frames), at most max_graphs of them; another guidance
    scale replays the same graph with the new value."""
    from dataclasses import replace

    from emo.config import PRESETS
    from emo.runtime.tensorrt_backend import TensorRTBackend

    _, plans = dirs
    backend = TensorRTBackend(plans, max_graphs=1)
    base = replace(PRESETS["tiny"].run, frames=4, motion_frames=2, steps=2)
    prepared = _prepared(backend, base)
    lat = base.size // backend.cfg.vae.downscale
    for run, captures in ((base, 1), (replace(base, frames=3, motion_frames=1), 2), (base, 3)):
        latents = torch.randn(1, 4, run.frames, lat, lat, generator=torch.Generator().manual_seed(0))
        _steps(backend, prepared, run, latents)
        assert backend.captures == captures and len(backend.step_cache.steps) == 1
    latents = torch.randn(1, 4, base.frames, lat, lat, generator=torch.Generator().manual_seed(0))
    first = _steps(backend, prepared, base, latents)
    other = _steps(backend, prepared, replace(base, guidance_scale=1.5), latents)
    assert backend.captures == 3 and float((first[0] - other[0]).abs().max()) > 1e-4
