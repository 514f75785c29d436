"""Calibration and held-out inputs: image + voice pairs, from a folder or generated from the demo media.

The generated sets are variations of the built-in portrait and voice (mirroring, light, colour, a small rotation;
another segment of the voice, pitch, noise). The held-out variations use other transforms and voice segments than
the calibration ones, and the build refuses a held-out input whose content equals a calibration input's, so the
accuracy gate never sees the data the scales were fitted on.
"""
from __future__ import annotations

import hashlib
import wave
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..media.audio import load_audio

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
AUDIO_SUFFIXES = (".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus", ".mp4", ".mov", ".mkv")
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class MediaPair:
    name: str
    image: Path
    audio: Path


@dataclass(frozen=True)
class Variation:
    """A transformed copy of the demo portrait and a segment of the demo voice."""

    name: str
    mirror: bool = False
    brightness: float = 1.0
    contrast: float = 1.0
    colour: float = 1.0
    rotate: float = 0.0  # degrees
    start: float = 0.0  # seconds into the voice
    pitch: float = 1.0  # resampling factor (> 1: faster and higher)
    snr_db: float | None = None  # white noise at this signal-to-noise ratio


CALIBRATION_VARIATIONS = (
    Variation("demo"),
    Variation("mirror-bright", mirror=True, brightness=1.15, start=1.0, pitch=1.08),
    Variation("dark-contrast", brightness=0.85, contrast=1.2, rotate=3.0, start=2.0, pitch=0.93, snr_db=30.0),
    Variation("muted-colour", colour=0.6, rotate=-3.0, start=1.2, snr_db=35.0),
)
HELD_OUT_VARIATIONS = (
    Variation("held-out-a", mirror=True, contrast=0.9, colour=1.3, rotate=-5.0, start=1.5, pitch=1.04, snr_db=25.0),
    Variation("held-out-b", brightness=1.06, contrast=1.1, rotate=4.5, start=2.5, pitch=0.97),
)


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """Mono float samples in [-1, 1] -> 16-bit PCM WAV."""
    pcm = (np.clip(samples, -1, 1) * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def _segment(samples: np.ndarray, start: float, seconds: float) -> np.ndarray:
    """`seconds` of samples from `start`, wrapping around a voice shorter than start + seconds."""
    n = int(seconds * SAMPLE_RATE)
    first = int(start * SAMPLE_RATE) % samples.shape[0]
    return np.resize(np.roll(samples, -first), n)


def _vary(v: Variation, image, voice: np.ndarray, seconds: float) -> tuple[object, np.ndarray]:
    from PIL import ImageEnhance, ImageOps

    if v.mirror:
        image = ImageOps.mirror(image)
    for enhance, factor in ((ImageEnhance.Brightness, v.brightness), (ImageEnhance.Contrast, v.contrast),
                            (ImageEnhance.Color, v.colour)):
        if factor != 1.0:
            image = enhance(image).enhance(factor)
    if v.rotate:
        image = image.rotate(v.rotate, resample=3, fillcolor=(128, 128, 128))  # 3: bicubic
    x = _segment(voice, v.start, seconds * v.pitch)
    if v.pitch != 1.0:  # (n,) -> (n / pitch,): same content, faster and higher
        x = np.interp(np.arange(int(x.shape[0] / v.pitch)) * v.pitch, np.arange(x.shape[0]), x)
    if v.snr_db is not None:
        rng = np.random.default_rng(zlib.crc32(v.name.encode()))
        x = x + rng.standard_normal(x.shape[0]) * np.sqrt(np.mean(x ** 2) / 10 ** (v.snr_db / 10))
    return image, x.astype(np.float32)


def generated_pairs(variations: tuple[Variation, ...], out_dir: Path, seconds: float) -> list[MediaPair]:
    """Write each variation of the demo portrait and voice as `<name>.png` + `<name>.wav` into out_dir."""
    from PIL import Image

    assets = resources.files("emo") / "assets"
    with Image.open(str(assets / "portrait.jpg")) as im:
        portrait = im.convert("RGB")
    voice = load_audio(str(assets / "speech.wav"), SAMPLE_RATE)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = []
    for v in variations:
        image, audio = _vary(v, portrait, voice, seconds)
        image.save(out_dir / f"{v.name}.png")
        pairs.append(MediaPair(v.name, out_dir / f"{v.name}.png", write_wav(out_dir / f"{v.name}.wav", audio)))
    return pairs


def folder_pairs(folder: Path, out_dir: Path, seconds: float) -> list[MediaPair]:
    """Pairs `<stem>.<image>` + `<stem>.<audio>` of a folder; each voice is decoded and cut to `seconds`
    (calibration renders every pair whole, so long tracks would only cost time)."""
    if not folder.is_dir():
        raise InputError(f"calibration folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    images = {p.stem: p for p in files if p.suffix.lower() in IMAGE_SUFFIXES}
    audios = {p.stem: p for p in files if p.suffix.lower() in AUDIO_SUFFIXES}
    stems = sorted(images.keys() & audios.keys())
    if not stems:
        raise InputError(f"{folder} holds no image + audio pair with the same name (e.g. a.jpg + a.wav)")
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = []
    for stem in stems:
        samples = load_audio(audios[stem], SAMPLE_RATE)[:int(seconds * SAMPLE_RATE)]
        pairs.append(MediaPair(stem, images[stem], write_wav(out_dir / f"{stem}.wav", samples)))
    return pairs


def pair_digest(pair: MediaPair) -> str:
    """Content hash of one pair (image file bytes + audio file bytes)."""
    h = hashlib.sha256()
    for path in (pair.image, pair.audio):
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def set_hash(pairs: list[MediaPair], settings: dict) -> str:
    """Hash of a calibration set: every pair's content, in order, and the render settings it was run with."""
    h = hashlib.sha256(repr(sorted(settings.items())).encode())
    for p in pairs:
        h.update(pair_digest(p).encode())
    return h.hexdigest()[:16]


def check_disjoint(calibration: list[MediaPair], held_out: list[MediaPair]) -> None:
    seen = {pair_digest(p): p.name for p in calibration}
    clash = [f"{p.name} = {seen[d]}" for p in held_out if (d := pair_digest(p)) in seen]
    if clash:
        raise InputError(f"held-out inputs equal calibration inputs ({', '.join(clash)}); the gate needs unseen data")
