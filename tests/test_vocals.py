"""MDX-Net vocal separation on ONNX Runtime with small MDX-format models made here: a spectral gain per bin, so the
separated stem is known (a low tone kept, a high tone removed)."""
from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from emo.cli.run import main  # noqa: E402
from emo.errors import InputError  # noqa: E402
from emo.preprocess.vocals import VocalSeparator, model_hash  # noqa: E402

from .media_factory import PORTRAIT, probe, write_wav  # noqa: E402
from .onnx_models import mdx_model  # noqa: E402

RATE = 44100
N_FFT, DIM_F, DIM_T = 2048, 512, 16  # bins of 21.5 Hz up to 11 kHz; 15360-sample chunks (hop 1024)


def tone(freq: float, seconds: float, rate: int = RATE, amp: float = 0.3) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def separator_dir(root: Path, cutoff_bin: int | None, primary: str = "Vocals", compensate: float = 1.0) -> Path:
    """An MDX-format model keeping bins below cutoff_bin (all bins when None), with its mdx_model_data.json."""
    root.mkdir(parents=True, exist_ok=True)
    gains = np.ones(DIM_F, np.float32)
    if cutoff_bin is not None:
        gains[cutoff_bin:] = 0
    path = mdx_model(root / "Kim_Vocal_2.onnx", gains, DIM_T)
    entry = {"compensate": compensate, "mdx_dim_f_set": DIM_F, "mdx_dim_t_set": int(math.log2(DIM_T)),
             "mdx_n_fft_scale_set": N_FFT, "primary_stem": primary}
    (root / "mdx_model_data.json").write_text(json.dumps({model_hash(path): entry}))
    return path


def test_all_pass_model_reconstructs_the_mix(tmp_path):
    sep = VocalSeparator(separator_dir(tmp_path, None))
    mix = np.stack([tone(440, 1.3), tone(3000, 1.3)])
    out = sep.vocals(mix)
    assert out.shape == mix.shape
    inner = slice(2048, -2048)  # the tones' abrupt onsets are broadband; bins 0-2 and > dim_f are dropped
    np.testing.assert_allclose(out[:, inner], mix[:, inner], atol=2e-3)


def test_low_pass_model_keeps_the_voice_and_drops_the_music(tmp_path):
    sep = VocalSeparator(separator_dir(tmp_path, 160))  # keeps < 3.4 kHz
    voice, music = tone(440, 1.7), tone(8000, 1.7, amp=0.5)
    out = sep.vocals(np.stack([voice + music, voice + music]))
    inner = slice(2048, -2048)
    np.testing.assert_allclose(out[0, inner], voice[inner], atol=1e-2)
    assert np.abs(out[0] - voice)[inner].std() < 0.03 * voice.std()


def test_instrumental_model_gives_mix_minus_compensated_stem(tmp_path):
    """A model whose primary stem is the instrumental (here: the high band) -> vocals = mix - 1.0 x stem."""
    model = separator_dir(tmp_path / "m", None, primary="Instrumental")
    gains = np.zeros(DIM_F, np.float32)
    gains[160:] = 1
    mdx_model(model, gains, DIM_T)  # same file, new weights: rewrite the table for the new hash
    entry = json.loads((model.parent / "mdx_model_data.json").read_text()).popitem()[1]
    (model.parent / "mdx_model_data.json").write_text(json.dumps({model_hash(model): entry}))
    sep = VocalSeparator(model)
    voice, music = tone(440, 1.2), tone(8000, 1.2, amp=0.5)
    out = sep.vocals(np.stack([voice + music, voice]))
    inner = slice(2048, -2048)
    np.testing.assert_allclose(out[:, inner], np.stack([voice, voice])[:, inner], atol=1e-2)


def test_loud_mix_is_limited_then_restored(tmp_path):
    sep = VocalSeparator(separator_dir(tmp_path, None))
    mix = np.stack([tone(440, 1.0, amp=3.0)] * 2)
    np.testing.assert_allclose(sep.vocals(mix)[:, 2048:-2048], mix[:, 2048:-2048], atol=2e-2)


def test_load_vocals_resamples_to_16k_mono(tmp_path):
    sep = VocalSeparator(separator_dir(tmp_path / "m", 160))
    write_wav(tmp_path / "song.wav", np.stack([tone(440, 1.0, 22050), tone(440, 1.0, 22050)]) + 0.0, 22050)
    out = sep.load_vocals(tmp_path / "song.wav")
    assert out.shape == (16000,)
    np.testing.assert_allclose(out[800:-800], tone(440, 1.0, 16000)[800:-800], atol=2e-2)


def test_refusals(tmp_path):
    with pytest.raises(InputError, match="not found"):
        VocalSeparator(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(InputError, match="bad.onnx"):
        VocalSeparator(tmp_path / "bad.onnx")
    other = mdx_model(tmp_path / "other.onnx", np.ones(64, np.float32), 16)  # no table entry, unknown shape
    with pytest.raises(InputError, match="mdx_model_data.json"):
        VocalSeparator(other)
    sep = VocalSeparator(separator_dir(tmp_path / "m", 1))  # keeps nothing: the voice is gone
    write_wav(tmp_path / "v.wav", tone(440, 0.5, 16000)[None])
    with pytest.raises(InputError, match="no voice left"):
        sep.load_vocals(tmp_path / "v.wav")


def _cli(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        rc = main(list(args))
    return rc, err.getvalue()


def test_cli_separate_vocals(tmp_path):
    model = separator_dir(tmp_path / "sep", 160)
    song = tone(300, 0.6, RATE) * (1 + 0.5 * np.sin(np.linspace(0, 12, int(0.6 * RATE)))) + tone(9000, 0.6, RATE)
    write_wav(tmp_path / "song.wav", song[None].astype(np.float32), RATE)
    out = tmp_path / "out"
    out.mkdir()
    fast = ["--size", "64", "--steps", "1", "--frames-per-clip", "4", "--motion-frames", "2", "--quiet"]
    rc, err = _cli("--demo", str(PORTRAIT), str(tmp_path / "song.wav"), "-o", str(out / "a.mp4"),
                   "--separate-vocals", str(model), *fast)
    assert rc == 0, err
    info = probe(out / "a.mp4")
    assert info["frames"] == math.ceil(0.6 * 25) and info["audio_codec"] == "aac"
    rc, err = _cli("--demo", str(PORTRAIT), str(tmp_path / "song.wav"), "-o", str(out / "b.mp4"),
                   "--separate-vocals", *fast)
    assert rc == 2 and "--separate-vocals needs MODEL.onnx" in err
    rc, err = _cli("--demo", str(PORTRAIT), str(tmp_path / "song.wav"), "-o", str(out / "c.mp4"),
                   "--separate-vocals", str(tmp_path / "nope.onnx"), *fast)
    assert rc == 2 and "vocal separation model not found" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4"]
