"""The demo model: its generated training data, its training from scratch, and the shipped weights."""
from __future__ import annotations

import numpy as np
import torch

from emo.config import PRESETS, TINY, RunOptions
from emo.demo_model.clips import (
    HELD_OUT_IDENTITIES,
    HELD_OUT_VOICES,
    TRAIN_IDENTITIES,
    TRAIN_VOICES,
    framed_identity,
    identities,
    make_clip,
    write_inputs,
)
from emo.demo_model.faces import make_identity
from emo.demo_model.voices import synth_voice


def test_generator_is_deterministic():
    a, b = make_clip(3, 17, 2.0), make_clip(3, 17, 2.0)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
    assert np.array_equal(a.openness, b.openness) and np.array_equal(a.poses, b.poses)
    assert np.array_equal(make_identity(5).image, make_identity(5).image)
    assert not np.array_equal(make_identity(5).image, make_identity(6).image)
    assert np.array_equal(synth_voice(9, 1.5), synth_voice(9, 1.5))


def test_clip_truth_follows_the_voice():
    clip = make_clip(0, 21, 6.0)
    assert clip.frames.shape == (150, 128, 128, 3) and clip.frames.dtype == np.uint8
    assert clip.openness.shape == clip.blink.shape == (150,) and clip.poses.shape == (150, 4)
    assert clip.openness.min() == 0.0 and clip.openness.max() == 1.0  # silences and loud speech
    assert (clip.blink > 0).any()


def test_training_and_held_out_seeds_are_disjoint():
    assert set(TRAIN_IDENTITIES).isdisjoint(HELD_OUT_IDENTITIES)
    assert set(TRAIN_VOICES).isdisjoint(HELD_OUT_VOICES)
    held = identities(HELD_OUT_IDENTITIES, 2)
    assert all(framed_identity(s) is not None for s in held)


def test_twenty_iterations_from_scratch_lower_the_loss():
    from emo.demo_model.dataset import build
    from emo.demo_model.train_denoiser import DenoiserTrainer, fresh_net
    from emo.models.vae import VAE
    from emo.preprocess.audio_features import AudioEncoder

    torch.manual_seed(0)
    vae, encoder = VAE(TINY.vae).eval(), AudioEncoder(TINY.wav2vec).eval()
    data = build([0, 1], vae, 0.5, encoder, clips=2, seconds=1.2, size=64)
    trainer = DenoiserTrainer(fresh_net(PRESETS["demo"].model, 0), data, frames=4, motion_frames=2, lr=2e-3)
    before = trainer.validation_loss(6)
    for step in range(20):
        trainer.step(step, 20)
    after = trainer.validation_loss(6)
    assert after < 0.95 * before, (before, after)


def test_shipped_weights_talk_on_held_out_clips(tmp_path):
    """Two short held-out clips (identities and voices the training never saw) at the demo's own settings."""
    from emo.quality.render import measure_render
    from emo.runtime.renderer import Renderer

    renderer = Renderer.demo(device="cpu")
    run = RunOptions().apply(PRESETS["demo"].run, renderer.cfg)
    for k, identity in enumerate(identities(HELD_OUT_IDENTITIES, 2)):
        voice = synth_voice(HELD_OUT_VOICES.start + 100 + k, 3.0, lead_in=0.4)
        image, audio = write_inputs(tmp_path, identity, voice, name=f"held{k}")
        prepared = renderer.prepare(image, audio, run)
        frames = np.concatenate(list(renderer.stream(prepared, run, seed=k)))
        report = measure_render(prepared, frames, run.fps)
        assert report.lip_sync_r >= 0.7, report
