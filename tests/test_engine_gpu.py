"""The tensorrt backend on a GPU: the tiny model's plans (built here for this GPU) against the onnxruntime backend
on the same export, component by component and as a whole render. Skipped where no TensorRT runtime can run."""
from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
import torch

from emo.cli.build_engine import main as build_main
from emo.cli.run import main as run_main
from emo.export.exporter import export_models
from emo.runtime.models import demo_models
from emo.trt_flavours import FLAVOURS, installed_flavours

pytestmark = pytest.mark.trt


def _runnable_flavour() -> tuple[str, int]:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: no TensorRT runtime can run here")
    major, minor = torch.cuda.get_device_capability()
    cc = major * 10 + minor
    for name in installed_flavours():
        if name == "tensorrt" or cc in FLAVOURS[name].aot_targets:
            return name, cc
    pytest.skip(f"no installed TensorRT flavour runs on sm_{cc} (installed: {installed_flavours() or 'none'}; "
                f"TensorRT for RTX targets {FLAVOURS['tensorrt-rtx'].aot_targets})")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    flavour, cc = _runnable_flavour()
    root = tmp_path_factory.mktemp("trt")
    export_models(demo_models(), root / "export", "fp32")
    args = [str(root / "export"), "--out", str(root / "plans"), "--flavour", flavour, "--quiet"]
    if flavour == "tensorrt-rtx":
        args += ["--target", f"sm_{cc}"]
    err = io.StringIO()
    with redirect_stderr(err):
        assert build_main(args) == 0, err.getvalue()
    return root / "export", root / "plans"


def _render(tmp_path, *args: str) -> np.ndarray:
    out = tmp_path / f"{args[1]}.npy"
    with redirect_stderr(io.StringIO()) as err, redirect_stdout(io.StringIO()):
        rc = run_main(["--demo", "--quiet", "--size", "128", "--steps", "3", "--frames-per-clip", "4",
                       "--motion-frames", "2", "-o", str(tmp_path / f"{args[1]}.mp4"), "--frames-out", str(out),
                       *args])
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
    _, plans = dirs
    frames = _render(tmp_path, "--engine-dir", str(plans))
    assert frames.shape[1:] == (128, 128, 3)


def test_capture_and_eager_enqueue_agree(dirs):
    """The replayed CUDA graph gives exactly what a plain enqueue gives, step after step."""
    from dataclasses import replace

    from emo.config import RUN_PRESETS
    from emo.runtime.renderer import Renderer
    from emo.runtime.tensorrt_backend import TensorRTBackend

    from .media_factory import PORTRAIT, SPEECH

    _, plans = dirs
    graphs, eager = TensorRTBackend(plans), TensorRTBackend(plans, capture=False)
    run = replace(RUN_PRESETS["tiny"], frames=4, motion_frames=2)
    prepared = Renderer(graphs).prepare(PORTRAIT, SPEECH, run)
    lat = run.size // graphs.cfg.vae.downscale
    latents = torch.randn(1, 4, run.frames, lat, lat, generator=torch.Generator().manual_seed(0))
    outs = []
    for be in (graphs, eager):
        video = be.prepare_video(prepared.portrait, run.motion_frames)
        motion = prepared.portrait.pixels.to(be.device, be.dtype).expand(run.motion_frames, -1, -1, -1)
        clip = be.prepare_clip(video, motion, prepared.windows[:run.frames])
        x = latents.to(be.device, be.dtype)
        outs.append([be.predict(clip, x, t, run).float().cpu() for t in (999, 500, 1)])
    assert graphs._graphs and all(g.graph is not None for g in graphs._graphs.values())
    for a, b in zip(*outs):
        assert torch.equal(a, b)
