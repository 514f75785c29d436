"""Make the `echomimic_whisper_a` golden case by running EchoMimic's own whisper code (not a test).

    PYTHONPATH=ECHOMIMIC_SRC:REPO python tests/data/golden/make/echomimic_whisper.py OUT_PREFIX

ECHOMIMIC_SRC is a checkout (or `git archive HEAD src/models/whisper`) of github.com/antgroup/echomimic; REPO is
this repository (for `emo.golden.recipe` only). Two cases, each with its own model, stored side by side:

- `short`: a whisper-tiny-shaped encoder, 0.81 s of audio (81 mel frames: one segment, zero-padded to 30 s,
  trimmed to 40 steps; 7.7 kB a step keeps it short);
- `long`: the 8-wide `whisper-test` shape (the segment logic does not depend on the width; whisper-tiny's 7.7 kB a
  step would not fit the size budget), 30.22 s of audio: a full 3000-frame segment, then one of 21 frames that
  keeps 10 steps. Its loudest sound is in the second segment, so the -8 floor of the first comes from the other.

Each encoder tensor comes from the repository's recipe ("sd15-recipe-v1", seeded with "whisper." + its checkpoint
name; the LayerNorm scales, whose whisper names lack "norm", are seeded as "<module>.norm.weight"), except the
positional table, which is the sinusoidal table whisper stores (the model's own buffer). The decoder, which the
features never use, keeps torch's initialisation (seed 0). The model is saved as an openai-whisper checkpoint
and loaded by the reference's `Audio2Feature`. Its audio loader needs ffmpeg; the samples (int16 / 32768, what
that loader returns for a 16 kHz mono 16-bit file) are passed to `audio2feat` as an array instead, which the
reference's `transcribe` accepts, and a stub `ffmpeg` module satisfies the import.

Recorded per case: the int16 samples, `audio2feat`'s array, and `feature2chunks` at 24 and 25 fps as the
(frames, 10) feature steps each frame reads (the reference run on an array whose rows hold their own index; for
`short` also checked bit for bit against `feature2chunks` on the real features, whose sha256 is stored). The float32
run is repeated in float64 (same steps, the reference's mel and encoder functions, float64 default dtype) to
measure its rounding noise.
"""
from __future__ import annotations

import hashlib
import json
import platform
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

from emo.golden.recipe import RECIPE, fingerprint, recipe_tensor

SR = 16000
FPS = (24, 25)
CASES = {  # name: (encoder dims, samples)
    "short": (dict(n_audio_state=384, n_audio_head=6, n_audio_layer=4), 12_970),
    "long": (dict(n_audio_state=8, n_audio_head=2, n_audio_layer=2), 483_460),
}
TEXT_DIMS = dict(n_vocab=51865, n_text_ctx=448, n_text_head=2, n_text_layer=1)


def synthetic_audio(n: int, seed: int, loud_at: float) -> np.ndarray:
    """int16 "speech": a gliding 110-180 Hz voice with harmonics, syllable-rate envelope, noise, a 0.1 s digital
    silence at 0.3 s and a louder burst at `loud_at` (fraction of the track)."""
    t = np.arange(n) / SR
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 9))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t) ** 2
    noise = np.random.default_rng(seed).standard_normal(n)
    x = 0.15 * envelope * voice + 0.01 * noise
    burst = (t >= loud_at * t[-1]) & (t < loud_at * t[-1] + 0.15)
    x[burst] *= 3.0
    x[(t >= 0.3) & (t < 0.4)] = 0.0
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def recipe_seed_name(name: str, shape: tuple[int, ...]) -> str:
    is_ln_scale = len(shape) == 1 and name.endswith(".weight")  # every 1-D weight of the encoder is a LayerNorm's
    return "whisper." + (name[: -len(".weight")] + ".norm.weight" if is_ln_scale else name)


def build_checkpoint(ref, dims: dict, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Save an openai-whisper checkpoint with recipe encoder weights; return them and the full dims."""
    all_dims = dict(n_mels=80, n_audio_ctx=1500, **dims, n_text_state=dims["n_audio_state"], **TEXT_DIMS)
    torch.manual_seed(0)
    model = ref.Whisper(ref.ModelDimensions(**all_dims))
    sd = model.state_dict()
    encoder = {}
    for name, t in sd.items():
        if not name.startswith("encoder."):
            continue
        if name == "encoder.positional_embedding":
            encoder[name] = t.clone()
        else:
            encoder[name] = recipe_tensor(recipe_seed_name(name, tuple(t.shape)), tuple(t.shape))
    sd.update(encoder)
    torch.save({"dims": all_dims, "model_state_dict": sd}, path)
    return encoder, all_dims


def index_chunks(a2f, steps: int, fps: int) -> np.ndarray:
    """(frames, 10) steps feature2chunks reads: run it on a (steps, 5, 384) array whose rows hold their index."""
    rows = np.broadcast_to(np.arange(steps, dtype=np.float32)[:, None, None], (steps, 5, 384))
    chunks = a2f.feature2chunks(np.ascontiguousarray(rows), fps)  # (frames, 50, 384): 10 steps × 5 states
    assert (chunks == chunks[:, :, :1]).all()
    return chunks[:, ::5, 0].astype(np.int16)


def float64_features(ref_audio, encoder, samples: np.ndarray) -> np.ndarray:
    """audio2feat in float64: the reference's log_mel_spectrogram, pad_or_trim and encoder, with the steps of
    transcribe() and audio2feat() (whose float16/float32 switch would otherwise cast the segments to float32).
    The encoder's LayerNorm and softmax call `.float()` (for float16 runs); meanwhile that keeps float64."""
    filters = ref_audio.mel_filters("cpu").double()
    saved, default, to_float = ref_audio.mel_filters, torch.get_default_dtype(), torch.Tensor.float
    ref_audio.mel_filters = lambda device, n_mels=80: filters
    torch.set_default_dtype(torch.float64)
    torch.Tensor.float = lambda self, *a, **k: self.to(torch.promote_types(self.dtype, torch.float32))
    try:
        mel = ref_audio.log_mel_spectrogram(torch.from_numpy(samples.astype(np.float64) / 32768.0))
        enc = encoder.double()
        parts = []
        for seek in range(0, mel.shape[-1], 3000):
            end = min(seek + 3000, mel.shape[-1])
            segment = ref_audio.pad_or_trim(mel[:, seek:seek + 3000], 3000)[None]
            with torch.no_grad():
                _, emb = enc(segment, include_embeddings=True)  # (1, states, 1500, c)
            parts.append(emb.transpose(0, 2, 1, 3)[0][: (end - seek) // 2])
    finally:
        ref_audio.mel_filters = saved
        torch.set_default_dtype(default)
        torch.Tensor.float = to_float
    return np.concatenate(parts, axis=0)


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def main(out_prefix: str) -> None:
    from safetensors.numpy import save_file

    sys.modules.setdefault("ffmpeg", types.ModuleType("ffmpeg"))  # only load_audio uses it; never called here
    from src.models.whisper import audio2feature
    from src.models.whisper.whisper import audio as ref_audio
    from src.models.whisper.whisper import model as ref_model

    torch.set_num_threads(4)
    tensors: dict[str, np.ndarray] = {}
    meta_cases = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case, (dims, n) in CASES.items():
            samples = synthetic_audio(n, seed=len(case), loud_at=0.6 if case == "short" else 0.995)
            ckpt = Path(tmp) / f"{case}.pt"
            encoder_weights, all_dims = build_checkpoint(ref_model, dims, ckpt)
            a2f = audio2feature.Audio2Feature(model_path=str(ckpt), device="cpu")
            feats = a2f.audio2feat(samples.astype(np.float32) / 32768.0)  # what load_audio returns for the file
            assert feats.dtype == np.float32, feats.dtype
            f64 = float64_features(ref_audio, a2f.model.encoder, samples)
            a2f.model.encoder.float()
            diff = feats.astype(np.float64) - f64
            chunks = {}
            for fps in FPS:
                idx = index_chunks(a2f, feats.shape[0], fps)
                entry = {"frames": int(idx.shape[0])}
                if feats.shape[-1] == 384 and feats.shape[1] == 5:  # feature2chunks reshapes to 384 columns
                    real = a2f.feature2chunks(feats, fps)
                    assert np.array_equal(real, feats[idx].reshape(idx.shape[0], 50, 384))
                    entry.update(sha256_float32=sha256(real.astype(np.float32)), shape=list(real.shape))
                tensors[f"out.{case}.chunk_steps_fps{fps}"] = idx
                chunks[str(fps)] = entry
            tensors[f"in.{case}.samples"] = samples
            tensors[f"out.{case}.features"] = np.ascontiguousarray(feats)
            meta_cases[case] = {
                "dims": all_dims,
                "num_samples": n,
                "mel_frames": n // 160,
                "steps": int(feats.shape[0]),
                "chunks": chunks,
                "weights": {"recipe": RECIPE, "fingerprint": fingerprint(encoder_weights),
                            "tensors": len(encoder_weights)},
                "float64_rerun": {"max_abs": float(np.abs(diff).max()), "rms": float(np.sqrt((diff ** 2).mean())),
                                  "max_abs_value": float(np.abs(f64).max())},
            }
            del a2f
    meta = {
        "kind": "echomimic_whisper",
        "reference": "github.com/antgroup/echomimic commit a53e970, src/models/whisper (audio2feature.py, "
                     "whisper/transcribe.py, whisper/model.py, whisper/audio.py)",
        "made_with": "PYTHONPATH=ECHOMIMIC_SRC:REPO python tests/data/golden/make/echomimic_whisper.py "
                     + out_prefix.rsplit("/", 1)[-1],
        "how": __doc__.strip().split("\n\n", 2)[2],
        "weights_rule": "encoder tensor NAME (checkpoint name, e.g. encoder.blocks.0.attn.query.weight) = "
                        "recipe_tensor('whisper.' + NAME) with '<module>.weight' of a LayerNorm seeded as "
                        "'whisper.<module>.norm.weight'; encoder.positional_embedding = sinusoids(1500, width)",
        "sample_rate": SR,
        "fps": list(FPS),
        "mel_filters_sha256": sha256(ref_audio.mel_filters("cpu").numpy()),
        "cases": meta_cases,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
        "device": "cpu, float32 (transcribe() falls back from float16 on a CPU)",
    }
    save_file(tensors, f"{out_prefix}.safetensors")
    Path(f"{out_prefix}.json").write_text(json.dumps(meta, indent=1) + "\n")
    size = Path(f"{out_prefix}.safetensors").stat().st_size
    print(f"wrote {out_prefix}.safetensors ({size / 1e6:.2f} MB) and .json")
    for case, m in meta_cases.items():
        print(case, m["steps"], "steps", {k: v["frames"] for k, v in m["chunks"].items()}, m["float64_rerun"])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    main(sys.argv[1])
