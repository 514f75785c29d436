"""Vocal separation with an MDX-Net ONNX model (Hallo ships `audio_separator/Kim_Vocal_2.onnx`), on ONNX Runtime.

The track is taken at 44.1 kHz stereo, peak-limited to 0.9, padded by n_fft / 2 and cut into chunks of
hop · (dim_t − 1) samples every 75 % of a chunk. Each chunk's STFT (periodic Hann window of n_fft, centred; the
channels' real and imaginary parts stacked as 4 planes; the lowest 3 bins zeroed, bins above dim_f dropped) goes
through the model, whose output spectrogram is inverted back to audio. The chunks are overlap-added with a Hann
window and the padding is cut off. A model whose primary stem is the instrumental gives the vocals as
mix − compensate · instrumental. Parameters come from the `mdx_model_data.json` next to the model (keyed by the MD5
of the file's last 10,000 KiB, as audio-separator keys them) or, for the (3072, 256) input shape of Kim_Vocal_2,
from its known values.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..media.audio import SILENCE_PEAK, load_audio, resample
from .onnx_session import ort_session

HASHED_BYTES = 10000 * 1024
PEAK = 0.9  # mixes louder than this are scaled down before separation
ZEROED_BINS = 3


@dataclass(frozen=True)
class MdxConfig:
    n_fft: int
    dim_f: int
    dim_t: int
    hop: int = 1024
    sample_rate: int = 44100
    overlap: float = 0.25
    compensate: float = 1.0
    primary: str = "vocals"  # or "instrumental"

    @property
    def chunk(self) -> int:
        return self.hop * (self.dim_t - 1)

    @property
    def trim(self) -> int:
        return self.n_fft // 2


MDX_PRESETS = {"kim-vocal-2": MdxConfig(n_fft=7680, dim_f=3072, dim_t=256, compensate=1.009)}


def model_hash(path: Path) -> str:
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - HASHED_BYTES))
        return hashlib.md5(f.read()).hexdigest()


def mdx_config(path: Path, dim_f: int | None, dim_t: int | None) -> MdxConfig:
    """Parameters of the model at `path` whose input is (batch, 4, dim_f, dim_t)."""
    table = path.parent / "mdx_model_data.json"
    if table.is_file():
        try:
            entry = json.loads(table.read_text()).get(model_hash(path))
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {table}: {e}") from None
        if entry is not None:
            try:
                return MdxConfig(n_fft=int(entry["mdx_n_fft_scale_set"]), dim_f=int(entry["mdx_dim_f_set"]),
                                 dim_t=2 ** int(entry["mdx_dim_t_set"]), compensate=float(entry["compensate"]),
                                 primary=str(entry.get("primary_stem", "Vocals")).lower())
            except (KeyError, TypeError, ValueError):
                raise InputError(f"{table} has an unusable entry for {path.name}") from None
    known = MDX_PRESETS["kim-vocal-2"]
    if (dim_f, dim_t) == (known.dim_f, known.dim_t):
        return known
    raise InputError(f"{path.name} is not described by an mdx_model_data.json next to it, and its input shape "
                     f"(4, {dim_f}, {dim_t}) is not Kim_Vocal_2's; add the model's entry to that file")


class VocalSeparator:
    def __init__(self, path: str | Path, providers: list[str] | None = None):
        path = Path(path)
        if not path.is_file():
            raise InputError(f"vocal separation model not found: {path}")
        self.session = ort_session(path, "vocal separation model", providers)
        inp = self.session.get_inputs()[0]
        shape = inp.shape
        if len(shape) != 4 or shape[1] != 4 or len(self.session.get_outputs()) != 1:
            raise InputError(f"{path} is not an MDX-Net model (input {shape}; expected (batch, 4, bins, frames))")
        ints = [d if isinstance(d, int) else None for d in shape[2:]]
        self.cfg = mdx_config(path, *ints)
        if any(d is not None and d != want for d, want in zip(ints, (self.cfg.dim_f, self.cfg.dim_t), strict=True)):
            raise InputError(f"{path} takes (4, {shape[2]}, {shape[3]}) spectrograms but its parameters say "
                             f"(4, {self.cfg.dim_f}, {self.cfg.dim_t})")
        self.input_name = inp.name
        self.window = torch.hann_window(self.cfg.n_fft, periodic=True, dtype=torch.float64)

    def _chunk(self, wave: np.ndarray) -> np.ndarray:
        """(2, chunk) -> the model's stem for it, (2, chunk)."""
        cfg = self.cfg
        spec = torch.stft(torch.from_numpy(wave), cfg.n_fft, cfg.hop, window=self.window, center=True,
                          return_complex=True)  # (2, n_fft / 2 + 1, dim_t)
        planes = torch.view_as_real(spec).permute(0, 3, 1, 2).reshape(4, -1, spec.shape[-1])  # c f t 2 -> (c 2) f t
        planes = planes[:, :cfg.dim_f].clone()
        planes[:, :ZEROED_BINS] = 0
        out = self.session.run(None, {self.input_name: planes[None].float().numpy()})[0][0]
        full = torch.zeros(4, cfg.n_fft // 2 + 1, out.shape[-1], dtype=torch.float64)
        full[:, :cfg.dim_f] = torch.from_numpy(out).double()
        spec = torch.view_as_complex(full.reshape(2, 2, *full.shape[1:]).permute(0, 2, 3, 1).contiguous())
        return torch.istft(spec, cfg.n_fft, cfg.hop, window=self.window, center=True,
                           length=cfg.chunk).numpy()  # (c 2) f t -> c f t complex -> c samples

    def stem(self, mix: np.ndarray) -> np.ndarray:
        """The model's primary stem of a (2, n) mix at cfg.sample_rate, (2, n)."""
        cfg = self.cfg
        n, trim, chunk = mix.shape[1], cfg.trim, cfg.chunk
        gen = chunk - 2 * trim
        padded = np.concatenate([np.zeros((2, trim)), mix, np.zeros((2, gen + trim - n % gen))], axis=1)
        total = padded.shape[1]
        out, weight = np.zeros((2, total)), np.zeros(total)
        for start in range(0, total, int((1 - cfg.overlap) * chunk)):
            end = min(start + chunk, total)
            part = np.zeros((2, chunk))
            part[:, :end - start] = padded[:, start:end]
            window = np.hanning(end - start)
            out[:, start:end] += self._chunk(part)[:, :end - start] * window
            weight[start:end] += window
        out = np.divide(out, weight, out=np.zeros_like(out), where=weight > 0)
        return out[:, trim:trim + n]

    def vocals(self, mix: np.ndarray) -> np.ndarray:
        """(2, n) mix -> (2, n) vocals, at the mix's own level."""
        peak = float(np.abs(mix).max())
        scale = PEAK / peak if peak > PEAK else 1.0
        stem = self.stem(mix.astype(np.float64) * scale)
        if self.cfg.primary != "vocals":
            stem = mix * scale - self.cfg.compensate * stem
        return (stem / scale).astype(np.float32)

    def load_vocals(self, path: str | Path, sample_rate: int = 16000) -> np.ndarray:
        """Decode `path`, separate, downmix -> mono vocals at `sample_rate`."""
        mix = load_audio(path, self.cfg.sample_rate, channels=2)
        vocals = resample(self.vocals(mix).mean(axis=0), self.cfg.sample_rate, sample_rate)
        if np.abs(vocals).max() < SILENCE_PEAK:
            raise InputError(f"no voice left in {path} after vocal separation")
        return vocals
