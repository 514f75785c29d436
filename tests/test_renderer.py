"""The renderer API: clip chaining, trimming, streaming, thread safety, flat memory over long audio."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from emo.config import RunConfig
from emo.runtime.renderer import Renderer
from emo.sampling.eager_clip import denoise
from emo.sampling.latents import decode_frames
from emo.sampling.torch_model import prepare_clip, prepare_video

from .media_factory import portrait, voice, write_wav

RUN = RunConfig(frames=4, motion_frames=2, steps=2, size=64, fps=25)


@pytest.fixture(scope="module")
def renderer():
    return Renderer.random(seed=3, device="cpu")


@pytest.fixture(scope="module")
def inputs(speech_media):
    d = speech_media(0.44)  # 11 frames -> 3 clips of 4, the last trimmed to 3
    return d / "face.png", d / "voice.wav"


def test_three_clips_chain_through_motion_frames(renderer, inputs):
    prepared = renderer.prepare(*inputs, RUN)
    assert prepared.frames == math.ceil(0.44 * 25) == 11
    clips = list(renderer.stream(prepared, RUN, seed=7))
    assert [len(c) for c in clips] == [4, 4, 3]  # trimmed to ceil(seconds * fps)

    # Recompute clip 2 on its own: motion frames = the last 2 frames clip 1 produced, noise = the generator's 2nd draw.
    m = renderer.backend.models
    p = prepared.portrait
    gen = torch.Generator().manual_seed(7)
    shape = (1, 4, RUN.frames, 8, 8)
    torch.randn(shape, generator=gen)
    noise = torch.randn(shape, generator=gen)
    with torch.no_grad():
        video = prepare_video(m.net, m.vae, m.cfg, p.pixels, p.face_emb, p.face_region, p.masks, RUN.motion_frames)
        tokens = m.net.audioproj(prepared.windows[4:8][None])[0]

        def clip_from(motion: torch.Tensor) -> np.ndarray:
            clip = prepare_clip(m.net, m.vae, m.cfg, video, motion, tokens)
            frames = decode_frames(m.vae, denoise(m.net, m.cfg, RUN, clip, noise), m.cfg.vae.scaling_factor)
            return frames.permute(0, 2, 3, 1).numpy()

        chained = clip_from(torch.from_numpy(clips[0][-2:]).permute(0, 3, 1, 2).contiguous() * 2 - 1)  # NCHW, as kept
        unchained = clip_from(p.pixels.expand(2, -1, -1, -1))
    np.testing.assert_allclose(chained, clips[1], atol=1e-5)
    assert np.abs(unchained - clips[1]).max() > 1e-3  # the motion frames matter


def test_same_seed_same_frames_and_threads_match_serial(renderer, inputs):
    prepared = renderer.prepare(*inputs, RUN)
    serial = [np.concatenate(list(renderer.stream(prepared, RUN, seed=s))) for s in (1, 2)]
    results: dict[int, np.ndarray] = {}

    def work(s: int) -> None:
        results[s] = np.concatenate(list(renderer.stream(prepared, RUN, seed=s)))

    threads = [threading.Thread(target=work, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(results[1], serial[0])
    np.testing.assert_array_equal(results[2], serial[1])
    assert np.abs(serial[0] - serial[1]).max() > 1e-3


def test_render_writes_mp4_and_raw_frames(renderer, inputs, tmp_path):
    res = renderer.render(*inputs, tmp_path / "o.mp4", RUN, seed=7, frames_out=tmp_path / "f.npy")
    raw = np.load(tmp_path / "f.npy")
    assert res.frames == 11 and raw.shape == (11, 64, 64, 3) and raw.dtype == np.float32
    streamed = np.concatenate(list(renderer.stream(renderer.prepare(*inputs, RUN), RUN, seed=7)))
    np.testing.assert_array_equal(raw, streamed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npy", "o.mp4"]


PEAK_RSS = """
import json, resource, sys
from emo.cli.run import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


@pytest.mark.slow
def test_memory_is_flat_in_audio_length(tmp_path):
    portrait().save(tmp_path / "face.png")
    peaks = {}
    for seconds in (10, 60):
        write_wav(tmp_path / f"v{seconds}.wav", voice(seconds))
        out = subprocess.run([sys.executable, "-c", PEAK_RSS, "--demo", str(tmp_path / "face.png"),
                              str(tmp_path / f"v{seconds}.wav"), "-o", str(tmp_path / f"o{seconds}.mp4"),
                              "--size", "64", "--steps", "1", "--quiet"], capture_output=True, text=True, timeout=900)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["rc"] == 0, out.stderr
        peaks[seconds] = result["maxrss_kb"] / 1024
    assert peaks[60] - peaks[10] < 64, peaks  # MiB: six times the audio, no more than a small margin


def test_stream_refuses_inputs_prepared_for_other_settings(renderer, inputs):
    """A Prepared made for one clip length or size cannot be rendered with another (it would drop frames or
    fail deep in the model): one clear error instead."""
    import dataclasses

    from emo.errors import InputError

    prepared = renderer.prepare(*inputs, RUN)  # 11 frames padded to 3 clips of 4
    with pytest.raises(InputError, match="not whole clips of 5"):
        next(renderer.stream(prepared, dataclasses.replace(RUN, frames=5)))
    with pytest.raises(InputError, match="prepared at 64x64 pixels, the run renders 128x128"):
        next(renderer.stream(prepared, dataclasses.replace(RUN, size=128)))
    short = dataclasses.replace(prepared, windows=prepared.windows[:8])  # features for fewer frames than the video
    with pytest.raises(InputError, match="8 frames of audio features for 11 video frames"):
        next(renderer.stream(short, RUN))
