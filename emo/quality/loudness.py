"""The voice's loudness per video frame: the envelope the mouth should follow."""
from __future__ import annotations

import math

import numpy as np


def loudness_envelope(samples: np.ndarray, sample_rate: int, fps: float, frames: int | None = None) -> np.ndarray:
    """RMS of the samples of each video frame, [i/fps, (i+1)/fps), lightly smoothed over neighbouring frames
    (weights 1/4, 1/2, 1/4) -> (frames,) float64. frames: how many (default: ceil(seconds · fps)); frames past
    the audio's end are silent."""
    x = np.asarray(samples, np.float64).reshape(-1)
    if frames is None:
        frames = math.ceil(x.size / sample_rate * fps)
    edges = np.round(np.arange(frames + 1) * sample_rate / fps).astype(np.int64)
    padded = np.concatenate([x, np.zeros(max(0, int(edges[-1]) - x.size))])
    sums = np.concatenate([[0.0], np.cumsum(padded ** 2)])
    counts = np.maximum(edges[1:] - edges[:-1], 1)
    rms = np.sqrt((sums[edges[1:]] - sums[edges[:-1]]) / counts)
    if frames < 3:
        return rms
    padded_rms = np.concatenate([rms[:1], rms, rms[-1:]])
    return 0.25 * padded_rms[:-2] + 0.5 * padded_rms[1:-1] + 0.25 * padded_rms[2:]


def speech_level(envelope: np.ndarray) -> float:
    """A robust 'loud speech' level: the 90th percentile of the frames above a tenth of the loudest."""
    env = np.asarray(envelope, np.float64)
    top = env.max(initial=0.0)
    if top <= 0:
        return 0.0
    return float(np.percentile(env[env > 0.1 * top], 90))


def silent_frames(envelope: np.ndarray, level: float | None = None, threshold: float = 0.08) -> np.ndarray:
    """Frames quieter than `threshold` of the speech level -> bool (frames,)."""
    level = speech_level(envelope) if level is None else level
    return np.asarray(envelope) < threshold * level


def speaking_frames(envelope: np.ndarray, level: float | None = None, threshold: float = 0.3) -> np.ndarray:
    """Frames louder than `threshold` of the speech level -> bool (frames,)."""
    level = speech_level(envelope) if level is None else level
    return np.asarray(envelope) > threshold * level
