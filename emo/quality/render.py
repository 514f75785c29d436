"""The quality of a render, measured from what the renderer prepared (the reference crop and the face found in
it) and the frames it made."""
from __future__ import annotations

import numpy as np

from ..media.audio import load_audio
from .metrics import QualityReport, measure


def reference_pixels(prepared) -> np.ndarray:
    """The reference crop the renderer used: (S, S, 3) uint8."""
    pixels = prepared.portrait.pixels  # (3, S, S) in [-1, 1]
    return ((pixels.permute(1, 2, 0).float().numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


def measure_render(prepared, frames: np.ndarray, fps: float, sample_rate: int = 16000) -> QualityReport:
    """prepared: Renderer.prepare's result; frames: every frame rendered from it, (T, S, S, 3) in [0, 1]."""
    samples = load_audio(prepared.audio_path, sample_rate)
    return measure(frames, samples, sample_rate, fps, reference_pixels(prepared), prepared.portrait.face)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two frame arrays in [0, 1], in dB (inf when equal)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def render_and_measure(renderer, run, image, audio, seed: int = 0) -> tuple[QualityReport, np.ndarray]:
    """Render image + audio through `renderer` (every frame, in memory) -> (its quality, frames (T, S, S, 3))."""
    prepared = renderer.prepare(image, audio, run)
    frames = np.concatenate(list(renderer.stream(prepared, run, seed)))
    return measure_render(prepared, frames, run.fps, run.sample_rate), frames
