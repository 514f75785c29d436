"""wav2vec2 features reproduce Hallo's audio goldens; windowing and weight-name variants."""
from __future__ import annotations

import math

import pytest
import torch

from emo.checkpoints.state_dict import CheckpointError
from emo.config import TINY, Wav2VecConfig
from emo.golden.cases import REPO_GOLDEN_DIR, cases, load_case
from emo.preprocess.audio_features import (
    AudioEncoder,
    compute_audio_features,
    frame_count,
    normalize_waveform,
    window_features,
)

CASES = cases("audio")


def test_repository_has_audio_cases():
    assert cases("audio", labels=("repo",)), f"no audio golden case in {REPO_GOLDEN_DIR}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_audio_features_match_golden(case):
    meta, t = load_case(case)
    cfg = Wav2VecConfig.from_transformers(meta["wav2vec2_config"])
    enc = AudioEncoder.from_state_dict(cfg, {k[len("wav2vec."):]: v for k, v in t.items() if k.startswith("wav2vec.")})
    wav = t["in.waveform"].numpy()
    assert (normalize_waveform(wav) - t["out.normalized"]).abs().max().item() <= 1e-5
    feats, frames = compute_audio_features(enc, wav, meta["fps"], meta["clip_length"], meta["sample_rate"])
    assert frames == meta["audio_length_frames"] == frame_count(len(wav), meta["sample_rate"], meta["fps"])
    assert feats.shape == t["out.audio_emb"].shape
    assert feats.shape[0] == meta["padded_frames"]
    assert (feats - t["out.audio_emb"]).abs().max().item() <= 1e-4


def test_window_features_clamps_at_the_ends():
    emb = torch.randn(7, 3, 4)
    win = window_features(emb, radius=2)
    assert win.shape == (7, 5, 3, 4)
    for i in range(7):
        for j, off in enumerate(range(-2, 3)):
            assert torch.equal(win[i, j], emb[min(max(i + off, 0), 6)])


@pytest.fixture(scope="module")
def tiny_encoder():
    torch.manual_seed(0)
    return AudioEncoder(TINY.wav2vec)


def test_legacy_weight_norm_and_ctc_names_load(tiny_encoder):
    sd = tiny_encoder.model.state_dict()
    g = sd.pop("encoder.pos_conv_embed.conv.parametrizations.weight.original0")
    v = sd.pop("encoder.pos_conv_embed.conv.parametrizations.weight.original1")
    legacy = {f"wav2vec2.{k}": t for k, t in sd.items()}
    legacy["wav2vec2.encoder.pos_conv_embed.conv.weight_g"] = g
    legacy["wav2vec2.encoder.pos_conv_embed.conv.weight_v"] = v
    legacy["lm_head.weight"] = torch.zeros(32, TINY.wav2vec.hidden_size)
    enc = AudioEncoder.from_state_dict(TINY.wav2vec, legacy)
    wav = torch.randn(16000)
    assert torch.equal(enc(wav, 25), tiny_encoder(wav, 25))


def test_wrong_weights_are_named(tiny_encoder):
    sd = dict(tiny_encoder.model.state_dict())
    sd["feature_projection.projection.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match="feature_projection.projection.weight"):
        AudioEncoder.from_state_dict(TINY.wav2vec, sd)


def test_pretrained_dir_round_trip(tmp_path, tiny_encoder):
    from safetensors.torch import save_file

    tiny_encoder.model.config.save_pretrained(tmp_path)
    weights = {k: v.contiguous() for k, v in tiny_encoder.model.state_dict().items()}
    save_file(weights, str(tmp_path / "model.safetensors"))
    enc = AudioEncoder.from_pretrained_dir(tmp_path)
    wav = torch.randn(8000)
    assert torch.equal(enc(wav, 13), tiny_encoder(wav, 13))
    with pytest.raises(CheckpointError, match="config.json"):
        AudioEncoder.from_pretrained_dir(tmp_path / "missing")


def test_padding_to_clip_multiple(tiny_encoder):
    wav = torch.randn(int(16000 * 1.37)).numpy()
    feats, frames = compute_audio_features(tiny_encoder, wav, fps=25, clip_length=16)
    assert frames == math.ceil(1.37 * 25) == 35
    assert feats.shape == (48, TINY.wav2vec.num_hidden_layers, TINY.wav2vec.hidden_size)
