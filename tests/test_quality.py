"""The quality measurement's own sanity, on the generator's truth clips (whose mouth follows the voice exactly)."""
from __future__ import annotations

import numpy as np
import pytest

from emo.demo_model.clips import HELD_OUT_IDENTITIES, framed_face, identities, make_clip, reference_crop
from emo.quality.loudness import loudness_envelope
from emo.quality.metrics import lagged_r, measure, pearson


@pytest.fixture(scope="module")
def clips():
    seeds = [0, *identities(HELD_OUT_IDENTITIES, 1)]
    return [make_clip(seed, 600_000 + k, 8.0) for k, seed in enumerate(seeds)]


def _measure(clip, frames=None, audio=None):
    return measure(clip.frames if frames is None else frames, clip.audio if audio is None else audio, clip.sample_rate,
                   clip.fps, reference_crop(clip), framed_face(clip))


def test_truth_clips_score_high(clips):
    for clip in clips:
        report = _measure(clip)
        assert report.lip_sync_r >= 0.95, report
        assert report.lag == 0
        assert report.rest_ratio <= 0.15, report
        assert report.identity_ssim >= 0.8, report
        assert report.silent_frames > 10 and report.speaking_frames > 10


def test_frozen_mouth_scores_zero(clips):
    clip = clips[0]
    frozen = np.repeat(clip.frames[:1], len(clip.frames), axis=0)
    assert abs(_measure(clip, frozen).lip_sync_r) < 0.05


def test_audio_shifted_by_a_second_lowers_r(clips):
    for clip in clips:
        shifted = np.roll(clip.audio, clip.sample_rate)
        assert _measure(clip, audio=shifted).lip_sync_r < _measure(clip).lip_sync_r - 0.4


def test_lag_is_found_within_two_frames():
    rng = np.random.default_rng(0)
    env = np.convolve(rng.random(200), np.ones(5) / 5, mode="same")
    r, lag = lagged_r(np.roll(env, 2), env)
    assert lag == 2 and r > 0.99
    assert pearson(env, env) == pytest.approx(1.0)
    assert pearson(env, np.ones_like(env)) == 0.0


def test_loudness_envelope_counts_frames_and_silence():
    sr, fps = 16000, 25
    audio = np.concatenate([np.zeros(sr), 0.5 * np.sin(np.arange(sr) * 0.3)])
    env = loudness_envelope(audio, sr, fps)
    assert env.shape == (50,)
    assert env[:20].max() < 1e-9 and env[30:].min() > 0.3
