"""torch-fast: the static-buffer step (CUDA graphs on a GPU) against eager torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from emo.config import RunConfig
from emo.runtime.models import demo_models
from emo.runtime.backend import TorchBackend
from emo.runtime.renderer import Renderer
from emo.runtime.torch_fast_backend import TorchFastBackend

from .media_factory import portrait, voice, write_wav

RUN = RunConfig(frames=4, motion_frames=2, steps=2, size=64, fps=25)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    portrait().save(d / "face.png")
    write_wav(d / "voice.wav", voice(0.44))  # 11 frames: 3 clips
    return d / "face.png", d / "voice.wav"


def _frames(renderer, media, run=RUN, seed=5):
    prepared = renderer.prepare(*media, run)
    return np.concatenate(list(renderer.stream(prepared, run, seed=seed)))


def test_static_buffer_path_equals_eager_on_cpu(media):
    """Same step through persistent buffers rebound per clip: identical to eager across chained clips and videos."""
    eager = Renderer.demo(device="cpu")
    fast = Renderer(TorchFastBackend(demo_models(), "cpu", "fp32", kernels=()))
    assert not fast.backend.cuda_graphs
    ref = _frames(eager, media)
    np.testing.assert_allclose(_frames(fast, media), ref, atol=1e-6)
    np.testing.assert_allclose(_frames(fast, media), ref, atol=1e-6)  # second video reuses the buffers
    other = RunConfig(frames=3, motion_frames=1, steps=2, size=64, fps=25, guidance_scale=2.0)
    np.testing.assert_allclose(_frames(fast, media, other), _frames(eager, media, other), atol=1e-6)
    assert len(fast.backend._steps) == 2  # one static step per shape/setting


def test_cuda_graphs_refused_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        TorchFastBackend(demo_models(), "cpu", "fp32", cuda_graphs=True)
    with pytest.raises(ValueError, match="overlapped decoding needs a CUDA device"):
        TorchFastBackend(demo_models(), "cpu", "fp32", overlap_decode=True)


def test_pipelined_stream_yields_the_same_clips_one_late(media):
    """A pipelined backend's clips come out one clip late: same frames, same per-clip sizes, same trimming."""
    plain = Renderer.demo(device="cpu")
    piped = Renderer.demo(device="cpu")
    piped.backend.pipelined = True  # the bookkeeping of the overlapped path, with a synchronous decode
    prepared = plain.prepare(*media, RUN)
    want = list(plain.stream(prepared, RUN, seed=5))
    got = list(piped.stream(prepared, RUN, seed=5))
    assert [len(c) for c in got] == [len(c) for c in want] == [4, 4, 3]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_fast_path_matches_eager_fp16(media):
    eager = Renderer(TorchBackend(demo_models(), "cuda", "fp16"))
    fast = Renderer(TorchFastBackend(demo_models(), "cuda", "fp16"))
    assert fast.backend.cuda_graphs and fast.backend.pipelined
    ref, got = _frames(eager, media), _frames(fast, media)
    assert np.abs(ref - got).max() < 2e-2


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_overlapped_decode_matches_synchronous_decode(media):
    sync = Renderer(TorchFastBackend(demo_models(), "cuda", "fp16", overlap_decode=False))
    overlapped = Renderer(TorchFastBackend(demo_models(), "cuda", "fp16", overlap_decode=True))
    np.testing.assert_allclose(_frames(overlapped, media), _frames(sync, media), atol=2e-3)


def test_bench_harness_writes_side_by_side_json(tmp_path):
    """emo-bench on the CPU (tiny preset): both backends, every stage, fps, memory, environment, command."""
    import json

    from emo.cli.bench import main

    out = tmp_path / "bench.json"
    assert main(["--clips", "2", "--warmup", "1", "--steps", "1", "--frames", "4", "--size", "64", "--profile", "1",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"eager", "fast"} and report["speedup_fps"] > 0
    for name, r in report["results"].items():
        assert r["frames"] == 8 and r["fps"] > 0 and r["peak_memory_bytes"] > 0
        assert {"motion+audio tokens", "step", "decode", "encode"} <= set(r["stages"])
        assert r["stages"]["step"]["n"] == 2 and len(r["stages"]["step"]["raw"]) == 2
        assert 0 < sum(r["share"].values()) <= 1.0 + 1e-6
    assert report["results"]["eager"]["stages"]["reference"]["n"] == 2  # Hallo-style: every clip
    assert "reference" not in report["results"]["fast"]["stages"]  # once per video, in the warm-up clip
    assert {"device", "torch", "python"} <= set(report["environment"]) and report["command"]
    for r in report["results"].values():  # the real renderer end to end on --clips clips of audio
        assert r["render"]["frames"] == 8 and r["render"]["fps"] > 0
        assert r["profile"] and {"name", "calls", "device_us", "self_cpu_us"} <= set(r["profile"][0])
