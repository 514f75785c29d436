"""Speed presets and their knobs through the product: the renderer on every CPU backend, emo-run's options and
--stats, and the refusals."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from emo.config import SPEEDS, RunConfig, RunOptions
from emo.errors import InputError
from emo.runtime.factory import RendererSpec, build_renderer
from emo.runtime.renderer import Renderer

from .cli_helpers import assert_refused, run_cli

RUN = RunConfig(frames=4, motion_frames=2, steps=4, size=64)
KNOBS = dict(sampler="dpm++", guidance_interval=(0.0, 0.5))  # what a graph backend runs too


@pytest.fixture(scope="module")
def media(speech_media):
    return speech_media(0.5)


@pytest.fixture(scope="module")
def torch_renderer():
    return Renderer.random(device="cpu")


def _frames(renderer: Renderer, media, run: RunConfig) -> list[np.ndarray]:
    prepared = renderer.prepare(media / "face.png", media / "voice.wav", run)
    return list(renderer.stream(prepared, run, seed=3))


def test_default_knobs_render_exactly_as_before(torch_renderer, media):
    """Every step guided and a cache interval of 1, spelt out, plan today's steps: the same frames, bit for bit."""
    plain = np.concatenate(_frames(torch_renderer, media, RUN))
    spelt = dataclasses.replace(RUN, guidance_interval=(0.0, 1.0), cache_interval=1, sampler="ddim")
    assert np.array_equal(np.concatenate(_frames(torch_renderer, media, spelt)), plain)
    fast = dataclasses.replace(RUN, **KNOBS, cache_interval=2)
    assert not np.array_equal(np.concatenate(_frames(torch_renderer, media, fast)), plain)


@pytest.mark.parametrize("name", ["torch-fast", "onnxruntime"])
def test_knobs_on_every_cpu_backend_match_torch(request, torch_renderer, media, name):
    """The same knobs on torch-fast (its static-step path, deep-feature reuse included) and onnxruntime (the
    export's denoiser at one CFG half) give the frames eager torch gives."""
    if name == "onnxruntime":
        spec = RendererSpec(engine_dir=str(request.getfixturevalue("tiny_export")), backend=name, device="cpu")
        run = dataclasses.replace(RUN, **KNOBS)
    else:
        spec = RendererSpec(random="tiny", backend=name, device="cpu", dtype="fp32", fast_on_cpu=True, kernels=())
        run = dataclasses.replace(RUN, **KNOBS, cache_interval=2)
    want = np.concatenate(_frames(torch_renderer, media, run))
    got = np.concatenate(_frames(build_renderer(spec), media, run))
    assert np.abs(got - want).max() < 2e-3


def test_graph_backend_refuses_deep_feature_reuse(request, media):
    spec = RendererSpec(engine_dir=str(request.getfixturevalue("tiny_export")), backend="onnxruntime", device="cpu")
    with pytest.raises(InputError, match="cache interval above 1 needs the torch"):
        build_renderer(spec).prepare(media / "face.png", media / "voice.wav",
                                     dataclasses.replace(RUN, cache_interval=2))


def test_a_shorter_first_clip_comes_out_first(torch_renderer, media):
    run = dataclasses.replace(RUN, first_clip_frames=2)
    clips = _frames(torch_renderer, media, run)
    assert [len(c) for c in clips] == [2, 4, 4, 3]  # 13 frames: 2, then clips of 4, the last trimmed
    prepared = torch_renderer.prepare(media / "face.png", media / "voice.wav", RUN)
    with pytest.raises(InputError, match="after a first clip of 2"):
        next(torch_renderer.stream(torch_renderer.prepare(media / "face.png", media / "voice.wav", RUN), run))
    assert prepared.windows.shape[0] == 16


def test_speed_presets_resolve_and_cost_what_they_say(torch_renderer):
    quality = torch_renderer.settings(speed="quality")
    assert (quality.steps, quality.guidance_scale, quality.sampler, quality.cache_interval) == (40, 3.5, "ddim", 1)
    for name in SPEEDS:
        assert torch_renderer.settings(speed=name).steps == SPEEDS[name].steps
    assert torch_renderer.settings(speed="fast", steps=5).steps == 5  # an option overrides its preset
    with pytest.raises(InputError, match="speed quality is Hallo's settings exactly"):
        torch_renderer.settings(speed="quality", steps=8)
    with pytest.raises(InputError, match="speed must be one of"):
        RunOptions(speed="ludicrous").apply(RUN)


def test_emo_run_speed_and_stats(tmp_path, speech_media):
    media = speech_media(0.5, into=tmp_path)
    out, stats = tmp_path / "out" / "o.mp4", tmp_path / "out" / "stats.json"
    args = ["--demo", str(media / "face.png"), str(media / "voice.wav"), "-o", str(out), "--quiet", "--size", "64",
            "--frames-per-clip", "8", "--speed", "realtime", "--stats", str(stats)]
    rc, err, left = run_cli(tmp_path, *args)
    assert rc == 0, err
    assert left == ["o.mp4", "stats.json"]
    s = json.loads(stats.read_text())
    assert s["frames"] == 13 and s["backend"] == "torch" and s["settings"]["speed"] == "realtime"
    assert 0 < s["first_frame_seconds"] <= s["seconds"] + 60
    # 2 clips of 8 frames for 13 frames out: the padding is counted (evaluations per frame delivered)
    run = RunOptions(speed="realtime").apply(RUN)
    per_rendered = sum(1 + (i / run.steps < run.guidance_interval[1]) for i in range(run.steps))
    assert per_rendered < 80 / 5
    assert s["unet_frame_evaluations"] == pytest.approx(per_rendered * 16)
    assert s["unet_frame_evaluations_per_frame"] == pytest.approx(per_rendered * 16 / 13, abs=1e-3)


@pytest.mark.parametrize("extra, match", [
    (["--speed", "quality", "--steps", "8"], "speed quality is Hallo's settings exactly"),
    (["--guidance-interval", "0.6:0.2"], "start must be <= its end"),
    (["--guidance-interval", "0.2:0.6", "--guidance-scale", "1"], "needs a guidance scale above 1"),
    (["--cache-interval", "0"], "cache interval"),
    (["--first-clip-frames", "1"], "first clip frames must be >= motion frames"),
    (["--guidance-scale", "1e308"], "guidance scale"),
])
def test_emo_run_refuses_bad_knobs(tmp_path, speech_media, extra, match):
    media = speech_media(0.5, into=tmp_path)
    args = ["--demo", str(media / "face.png"), str(media / "voice.wav"), "-o", str(tmp_path / "out" / "o.mp4"),
            "--quiet", "--stats", str(tmp_path / "out" / "s.json"), *extra]
    assert_refused(tmp_path, args, match, code=2)


def test_emo_bench_puts_speed_presets_side_by_side(tmp_path):
    from emo.cli.bench import main

    out = tmp_path / "bench.json"
    assert main(["--preset", "tiny", "--device", "cpu", "--backends", "torch", "--speeds", "fast,realtime",
                 "--clips", "1", "--warmup", "0", "--frames", "4", "--size", "64", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["speeds"]["torch"]
    assert list(rows) == ["fast", "realtime"]
    fast, realtime = rows["fast"], rows["realtime"]
    assert fast["fidelity"] == {"against": "fast", "psnr_db": float("inf"), "lip_sync_r_against": fast["lip_sync_r"]}
    assert 0 < realtime["fidelity"]["psnr_db"] < 100
    assert realtime["unet_frame_evaluations_per_frame"] < fast["unet_frame_evaluations_per_frame"]
    assert realtime["settings"]["steps"] == SPEEDS["realtime"].steps
