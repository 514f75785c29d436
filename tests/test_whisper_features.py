"""EchoMimic's whisper features: golden features of its own code, the per-frame windows, the checkpoint loader and
the refusal of unusable audio."""
from __future__ import annotations

import argparse
import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from emo.checkpoints.state_dict import CheckpointError
from emo.checkpoints.whisper import load_whisper_encoder
from emo.errors import InputError
from emo.golden.cases import REPO_GOLDEN_DIR
from emo.golden.recipe import fingerprint, recipe_tensor
from emo.models.whisper_encoder import WhisperConfig, WhisperEncoder, sinusoids, whisper_preset
from emo.preprocess.whisper_features import (
    N_FFT,
    chunk_count,
    chunk_indices,
    feature_step_count,
    log_mel_segments,
    mel_filterbank,
    whisper_chunks,
    whisper_features,
)

CASE = REPO_GOLDEN_DIR / "echomimic_whisper_a.json"
# Max abs error of our float32 features against the reference's. The reference's own float32 rounding, measured by
# the generator's float64 rerun: 4.5e-6 max / 7.6e-7 RMS (`short`, |values| up to 6.9), 1.9e-6 / 2.4e-7 (`long`);
# ours against the golden: 4.8e-6 / 7.5e-7 and 2.5e-6 / 2.8e-7. Our float64 features were within 8.9e-15 of the
# reference's float64 rerun (checked below through the recorded noise, which they reproduce).
TOLERANCE = 2e-5


@pytest.fixture(scope="module")
def golden():
    return json.loads(CASE.read_text()), load_file(str(CASE.with_suffix(".safetensors")))


def recipe_state_dict(cfg: WhisperConfig) -> dict[str, torch.Tensor]:
    """The generator's weights: checkpoint name NAME -> recipe_tensor("whisper." + NAME), LayerNorm scales seeded
    as "<module>.norm.weight", the positional table the sinusoids."""
    with torch.device("meta"):
        shapes = {f"encoder.{k}": tuple(v.shape) for k, v in WhisperEncoder(cfg).state_dict().items()}
    sd = {}
    for name, shape in shapes.items():
        if name == "encoder.positional_embedding":
            sd[name] = sinusoids(cfg.n_ctx, cfg.n_state)
        elif len(shape) == 1 and name.endswith(".weight"):
            sd[name] = recipe_tensor("whisper." + name.removesuffix(".weight") + ".norm.weight", shape)
        else:
            sd[name] = recipe_tensor("whisper." + name, shape)
    return sd


def save_whisper_pt(path, cfg: WhisperConfig, sd: dict[str, torch.Tensor], dims=None) -> None:
    """An openai-whisper checkpoint: dims as plain ints, encoder tensors and a (tiny) decoder's."""
    dims = dims if dims is not None else {"n_mels": cfg.n_mels, "n_audio_ctx": cfg.n_ctx, "n_audio_state": cfg.n_state,
                                          "n_audio_head": cfg.n_head, "n_audio_layer": cfg.n_layer, "n_vocab": 16,
                                          "n_text_ctx": 4, "n_text_state": 8, "n_text_head": 2, "n_text_layer": 1}
    decoder = {"decoder.token_embedding.weight": torch.zeros(16, 8), "decoder.ln.weight": torch.ones(8)}
    torch.save({"dims": dims, "model_state_dict": {**sd, **decoder}}, path)


@pytest.mark.parametrize("case", ["short", "long"])
def test_features_match_echomimic(golden, case, tmp_path):
    meta, t = golden
    m = meta["cases"][case]
    cfg = WhisperConfig.from_dims(m["dims"])
    sd = recipe_state_dict(cfg)
    assert fingerprint(sd) == m["weights"]["fingerprint"]
    save_whisper_pt(tmp_path / "whisper.pt", cfg, sd)
    encoder, ignored = load_whisper_encoder(tmp_path / "whisper.pt")
    assert ignored == ["decoder.ln.weight", "decoder.token_embedding.weight"]

    samples = t[f"in.{case}.samples"]
    assert samples.dtype == torch.int16 and samples.numel() == m["num_samples"]
    want = t[f"out.{case}.features"]
    assert feature_step_count(samples.numel()) == m["steps"] == want.shape[0]
    got = whisper_features(encoder, samples.float() / 32768, meta["sample_rate"])
    assert got.shape == want.shape == (m["steps"], cfg.hidden_states, cfg.n_state)
    assert (got - want).abs().max().item() <= TOLERANCE

    # In float64 we sit where the reference's float64 rerun sat: same distance from its float32 output.
    got64 = whisper_features(encoder.double(), samples.double() / 32768)
    err = got64 - want.double()
    assert err.abs().max().item() == pytest.approx(m["float64_rerun"]["max_abs"], rel=1e-6, abs=1e-12)
    assert err.pow(2).mean().sqrt().item() == pytest.approx(m["float64_rerun"]["rms"], rel=1e-6)


def test_mel_filters_are_whispers(golden):
    assert hashlib.sha256(mel_filterbank().numpy().tobytes()).hexdigest() == golden[0]["mel_filters_sha256"]


@pytest.mark.parametrize("case", ["short", "long"])
@pytest.mark.parametrize("fps", [24, 25])
def test_chunks_match_echomimic(golden, case, fps):
    meta, t = golden
    m = meta["cases"][case]["chunks"][str(fps)]
    feats = t[f"out.{case}.features"]
    idx = chunk_indices(feats.shape[0], fps)
    assert chunk_count(feats.shape[0], fps) == m["frames"] == idx.shape[0]
    assert torch.equal(idx, t[f"out.{case}.chunk_steps_fps{fps}"].long())
    if "sha256_float32" in m:  # feature2chunks' own output on the real features, bit for bit
        chunks = whisper_chunks(feats, fps)
        assert list(chunks.shape) == m["shape"]
        assert hashlib.sha256(chunks.numpy().tobytes()).hexdigest() == m["sha256_float32"]


def test_chunk_windows_by_hand():
    # 7 steps at 25 fps: centres 0, 2, 4, 6, 8; the loop stops after the first centre past 7 -> 5 frames.
    idx = chunk_indices(7, 25)
    assert idx.tolist()[0] == [0, 0, 0, 0, 0, 1, 2, 3, 4, 5]
    assert idx.tolist()[2] == [0, 1, 2, 3, 4, 5, 6, 6, 6, 6]
    assert idx.tolist()[4] == [4, 5, 6, 6, 6, 6, 6, 6, 6, 6]
    # 24 fps: centres int(i * 50 / 24) = 0, 2, 4, 6, 8 as well; 30 fps: 0, 1, 3, 5, 6, 8 -> 6 frames.
    assert idx.shape == (5, 10) and torch.equal(chunk_indices(7, 24), idx)
    assert chunk_indices(7, 30)[:, 4].tolist() == [0, 1, 3, 5, 6, 6]
    # The loop appends frame i, then stops if its centre ⌊i · 50 / fps⌋ is past the last step: frames up to the
    # first centre > steps, i.e. ⌊steps · fps / 50⌋ + 2 frames when 50 / fps is a whole number.
    assert [chunk_count(1510, fps) for fps in (12.5, 24, 25, 30, 60)] == [379, 727, 757, 908, 1815]


def test_chunk_token_order_and_slices():
    feats = torch.arange(9 * 3 * 2, dtype=torch.float32).reshape(9, 3, 2)
    chunks = whisper_chunks(feats, 25)  # (frames, 10 steps × 3 states, 2)
    idx = chunk_indices(9, 25)
    assert chunks.shape == (idx.shape[0], 30, 2)
    for f in range(idx.shape[0]):
        for k in range(10):
            for s in range(3):
                assert torch.equal(chunks[f, 3 * k + s], feats[idx[f, k], s])
    assert torch.equal(whisper_chunks(feats, 25, 2, 5), chunks[2:5])


def test_feature_step_count():
    # ⌊N / 160⌋ mel frames; 1500 steps a full segment, ⌊rest / 2⌋ of the last.
    counts = {320: 1, 479: 1, 480: 1, 640: 2, 480_000: 1500, 480_160: 1500, 480_320: 1501, 960_000: 3000}
    assert {n: feature_step_count(n) for n in counts} == counts


def test_segments_share_one_floor_and_match_the_whole_stft(golden):
    samples = golden[1]["in.long.samples"].float() / 32768
    segments = log_mel_segments(samples)
    assert [s.shape[1] for s in segments] == [3000, 21]
    stft = torch.stft(samples, N_FFT, 160, window=torch.hann_window(N_FFT), return_complex=True)
    whole = (mel_filterbank() @ stft[:, :-1].abs() ** 2).clamp(min=1e-10).log10()
    whole = (torch.maximum(whole, whole.max() - 8.0) + 4.0) / 4.0
    assert (torch.cat(segments, dim=1) - whole).abs().max().item() <= 1e-6
    # The loudest frame is in the 21-frame segment, and the first one's silence sits 8 (normalised: 2) below it.
    assert segments[1].max() > segments[0].max()
    assert segments[0].min().item() == pytest.approx(segments[1].max().item() - 2.0, abs=1e-6)


@pytest.fixture(scope="module")
def test_encoder():
    torch.manual_seed(0)
    return WhisperEncoder(whisper_preset("whisper-test")).eval()


def test_loader_casts_float16_and_is_weights_only(tmp_path, test_encoder):
    cfg = test_encoder.cfg
    sd = {f"encoder.{k}": v.half() for k, v in test_encoder.state_dict().items()}  # openai ships float16
    save_whisper_pt(tmp_path / "w.pt", cfg, sd)
    enc, _ = load_whisper_encoder(tmp_path / "w.pt")
    assert enc.cfg == cfg
    for k, v in enc.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, sd[f"encoder.{k}"].float()), k

    save_whisper_pt(tmp_path / "code.pt", cfg, sd, dims=argparse.Namespace(n_mels=80))  # a pickled object
    with pytest.raises(CheckpointError, match="weights-only") as e:
        load_whisper_encoder(tmp_path / "code.pt")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name, broken", [
    ("encoder.blocks.1.mlp.2.bias", None),
    ("encoder.conv2.weight", torch.zeros(8, 8, 2)),
    ("encoder.positional_embedding", torch.zeros(1500, 4)),
])
def test_loader_names_missing_or_misshaped_tensors(tmp_path, test_encoder, name, broken):
    sd = {f"encoder.{k}": v for k, v in test_encoder.state_dict().items()}
    if broken is None:
        del sd[name]
    else:
        sd[name] = broken
    save_whisper_pt(tmp_path / "w.pt", test_encoder.cfg, sd)
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")) as e:
        load_whisper_encoder(tmp_path / "w.pt")
    assert "\n" not in str(e.value)


def test_loader_reads_safetensors(tmp_path, test_encoder):
    cfg = test_encoder.cfg
    sd = {f"encoder.{k}": v.contiguous() for k, v in test_encoder.state_dict().items()}
    dims = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 8, "n_audio_head": 2, "n_audio_layer": 2}
    save_file(sd, str(tmp_path / "w.safetensors"), metadata={"dims": json.dumps(dims)})
    enc, ignored = load_whisper_encoder(tmp_path / "w.safetensors")
    assert enc.cfg == cfg and ignored == []
    assert all(torch.equal(v, sd[f"encoder.{k}"]) for k, v in enc.state_dict().items())

    wide = WhisperConfig(n_state=128, n_head=2, n_layer=1)  # no dims stored: 64 channels a head, as in whisper
    with torch.device("meta"):
        shapes = {f"encoder.{k}": v.shape for k, v in WhisperEncoder(wide).state_dict().items()}
    save_file({k: torch.zeros(s) for k, s in shapes.items()}, str(tmp_path / "bare.safetensors"))
    assert load_whisper_encoder(tmp_path / "bare.safetensors")[0].cfg == wide


@pytest.mark.parametrize("samples, rate, message", [
    (np.zeros(16000, np.float32), 44100, "16000 Hz"),
    (np.zeros(0, np.float32), 16000, "no samples"),
    (np.zeros((2, 16000), np.float32), 16000, "mono"),
    (np.full(16000, np.nan, np.float32), 16000, "NaN"),
    (np.zeros(319, np.float32), 16000, "too short"),
])
def test_unusable_audio_is_refused(test_encoder, samples, rate, message):
    with pytest.raises(InputError, match=message) as e:
        whisper_features(test_encoder, samples, rate)
    assert "\n" not in str(e.value)


def test_bad_fps_and_encoder_shapes_are_refused():
    with pytest.raises(InputError, match="fps"):
        chunk_count(100, 0)
    with pytest.raises(InputError, match="fps"):
        chunk_indices(100, float("nan"))
    encoder = WhisperEncoder(WhisperConfig(n_ctx=1000, n_state=8, n_head=2, n_layer=1))
    with pytest.raises(ValueError, match="1500 positions"):
        whisper_features(encoder, np.zeros(16000, np.float32))
