"""Voices synthesised in numpy: syllables of voiced vowels (a glottal harmonic series shaped by formants, with a
pitch contour) after unvoiced consonants (shaped noise), grouped into phrases separated by pauses of 0.3–2 s;
some voices sing (long vowels with vibrato). Where espeak-ng is installed, `espeak_sentence` speaks real words.

Every voice is a function of a seed and the length asked for.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
VOWEL_FORMANTS = (  # F1, F2, F3 in Hz (a, e, i, o, u and two centralised vowels)
    (730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410), (300, 870, 2240),
    (640, 1190, 2390), (490, 1350, 2500),
)


def _resonance(freqs: np.ndarray, centre: float, bandwidth: float) -> np.ndarray:
    return 1.0 / np.sqrt(1.0 + ((freqs - centre) / (bandwidth / 2)) ** 2)


def _vowel(rng: np.random.Generator, n: int, f0: np.ndarray, formants: tuple[int, int, int], sr: int) -> np.ndarray:
    """Additive synthesis: harmonics of the pitch contour f0 (n,), each weighted by the formant resonances."""
    phase = 2 * np.pi * np.cumsum(f0) / sr
    out = np.zeros(n)
    scale = rng.uniform(0.9, 1.12)  # vocal-tract length
    for k in range(1, int(4000 / f0.min()) + 1):
        fk = k * f0
        gain = sum(_resonance(fk, f * scale, 80 + 0.08 * f) * w for f, w in zip(formants, (1.0, 0.6, 0.3), strict=True))
        out += gain * (fk < sr / 2 - 500) * np.sin(k * phase) / k ** 0.7
    return out


def _consonant(rng: np.random.Generator, n: int) -> np.ndarray:
    """A fricative or plosive burst: white noise, high-passed (first difference) and band-shaped."""
    noise = rng.standard_normal(n + 1)
    noise = np.diff(noise) if rng.random() < 0.6 else noise[1:] - 0.5 * noise[:-1]
    env = np.sin(np.linspace(0, np.pi, n)) ** rng.uniform(0.5, 2)
    return noise * env


def _envelope(n: int, sr: int, attack: float = 0.02, release: float = 0.05) -> np.ndarray:
    env = np.ones(n)
    a, r = min(n // 2, int(attack * sr)), min(n // 2, int(release * sr))
    env[:a] = np.linspace(0, 1, a)
    if r:
        env[n - r:] = np.linspace(1, 0, r)
    return env


def _syllable(rng: np.random.Generator, pitch: float, singing: bool, sr: int) -> np.ndarray:
    parts = []
    if rng.random() < 0.7:
        nc = int(rng.uniform(0.03, 0.09) * sr)
        parts.append(_consonant(rng, nc) * rng.uniform(0.08, 0.3))
    length = rng.uniform(0.3, 0.8) if singing else rng.uniform(0.08, 0.32)
    nv = int(length * sr)
    t = np.arange(nv) / sr
    contour = pitch * (1 + rng.uniform(-0.15, 0.15) * t / max(length, 1e-3))
    if singing:
        contour = contour * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(4.5, 6.0) * t))
    vowel = _vowel(rng, nv, contour, VOWEL_FORMANTS[rng.integers(len(VOWEL_FORMANTS))], sr)
    vowel = vowel / (np.abs(vowel).max() + 1e-9) * _envelope(nv, sr) * rng.uniform(0.3, 1.0)
    parts.append(vowel)
    if rng.random() < 0.5:  # a short gap inside the word
        parts.append(np.zeros(int(rng.uniform(0.0, 0.06) * sr)))
    return np.concatenate(parts)


def synth_voice(seed: int, seconds: float, sr: int = SAMPLE_RATE, lead_in: float | None = None) -> np.ndarray:
    """A mono float32 voice of exactly `seconds`, peak 0.9: phrases of syllables between pauses of 0.3–2 s.

    lead_in: seconds of silence before the first phrase (default: random, 0.1–1 s)."""
    rng = np.random.default_rng([seed, 0x70CE])
    n = int(round(seconds * sr))
    singing = rng.random() < 0.2
    pitch = rng.uniform(90, 260)
    out = np.zeros(n)
    pos = int((rng.uniform(0.1, 1.0) if lead_in is None else lead_in) * sr)
    while pos < n:
        phrase = np.concatenate([_syllable(rng, pitch * rng.uniform(0.85, 1.2), singing, sr)
                                 for _ in range(rng.integers(2, 9))])
        phrase *= np.linspace(1.0, rng.uniform(0.6, 1.0), phrase.size)  # declination over the phrase
        end = min(n, pos + phrase.size)
        out[pos:end] = phrase[:end - pos]
        pos = end + int(rng.uniform(0.3, 2.0) * sr)
    out += rng.standard_normal(n) * 1e-4  # a faint noise floor, as any recording has
    return (out / (np.abs(out).max() + 1e-9) * 0.9).astype(np.float32)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak_sentence(text: str, pauses: tuple[float, ...] = (), sr: int = SAMPLE_RATE, voice: str = "en") -> np.ndarray:
    """Speak `text` with espeak-ng; `|` in the text splits it into parts separated by the given pauses (seconds).
    Raises RuntimeError where espeak-ng is not installed."""
    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed")
    from ..media.audio import load_audio

    parts = text.split("|")
    if len(pauses) != len(parts) - 1:
        raise ValueError(f"{len(parts)} parts need {len(parts) - 1} pauses, got {len(pauses)}")
    pieces = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, part in enumerate(parts):
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), part.strip()], check=True,
                           capture_output=True)
            pieces.append(load_audio(wav, sr))
            if i < len(pauses):
                pieces.append(np.zeros(int(pauses[i] * sr), np.float32))
    out = np.concatenate(pieces)
    return (out / (np.abs(out).max() + 1e-9) * 0.9).astype(np.float32)
