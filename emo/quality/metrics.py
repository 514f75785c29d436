"""The quality of a talking-face video, from its frames, its audio and the reference it was made from.

- lip sync: Pearson r between the mouth's openness per frame and the voice's loudness envelope, at the best lag
  within ±2 frames (the mouth may lead or trail the sound a little);
- mouth at rest: the mean openness in silent frames as a fraction of that in speaking frames;
- identity: SSIM of the face outside the mouth against the reference, each frame at its best shift within
  ±MAX_SHIFT pixels (a head that moves a little keeps its identity);
- stability: mean absolute change from frame to frame outside the mouth (0–1 pixel units).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..preprocess.face import Face
from .loudness import loudness_envelope, silent_frames, speaking_frames, speech_level
from .mouth import luma, mouth_box, mouth_openness, skin_luma

MAX_LAG = 2
MAX_SHIFT = 3


@dataclass(frozen=True)
class QualityReport:
    lip_sync_r: float  # best Pearson r over lags in [-MAX_LAG, MAX_LAG]
    lag: int  # frames the mouth trails (+) or leads (-) the sound at that r
    rest_ratio: float  # mean openness in silence / in speech (nan without both)
    identity_ssim: float
    stability: float
    frames: int
    silent_frames: int
    speaking_frames: int

    def to_dict(self) -> dict:
        return asdict(self)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def lagged_r(openness: np.ndarray, envelope: np.ndarray, max_lag: int = MAX_LAG) -> tuple[float, int]:
    """(best r, its lag): openness[i] against envelope[i - lag]."""
    best = (-2.0, 0)
    n = len(openness)
    for lag in range(-max_lag, max_lag + 1):
        a = openness[max(0, lag):n + min(0, lag)]
        b = envelope[max(0, -lag):n - max(0, lag)]
        if len(a) > 2:
            best = max(best, (pearson(a, b), lag))
    return best


def ssim_map(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """SSIM per pixel of two grey images in [0, 1] (Gaussian window, the usual constants)."""
    import cv2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (0, 0), sigma)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    a, b = a.astype(np.float32), b.astype(np.float32)
    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma * ma, blur(b * b) - mb * mb, blur(a * b) - ma * mb
    return ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))


def aligned_ssim(frame: np.ndarray, reference: np.ndarray, mask: np.ndarray, max_shift: int = MAX_SHIFT) -> float:
    """The mean SSIM over `mask` of a grey frame against the reference, at the frame's best integer shift."""
    best = -1.0
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            shifted = np.roll(frame, (dy, dx), axis=(0, 1))
            best = max(best, float(ssim_map(shifted, reference)[mask].mean()))
    return best


def _face_mask(face: Face, size: int) -> np.ndarray:
    """The face box without the mouth box -> bool (S, S)."""
    mask = np.zeros((size, size), bool)
    x0, y0, x1, y1 = (int(round(v)) for v in face.box)
    mask[max(0, y0):min(size, y1), max(0, x0):min(size, x1)] = True
    mx0, my0, mx1, my1 = mouth_box(face, size)
    mask[my0:my1, mx0:mx1] = False
    return mask


def measure(frames: np.ndarray, samples: np.ndarray, sample_rate: int, fps: float, reference: np.ndarray,
            face: Face) -> QualityReport:
    """frames (T, S, S, 3) in [0, 1] or uint8; samples: the mono voice; reference (S, S, 3): the reference crop
    the video was made from; face: the face found in it, in the frames' pixels."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] < 3:
        raise ValueError(f"need at least 3 frames (T, S, S, 3), got shape {frames.shape}")
    t, size = frames.shape[0], frames.shape[1]
    env = loudness_envelope(samples, sample_rate, fps, t)
    openness = mouth_openness(frames, face, skin_luma(reference, face))
    r, lag = lagged_r(openness, env)
    level = speech_level(env)
    silent, speaking = silent_frames(env, level), speaking_frames(env, level)
    rest = (float(openness[silent].mean() / openness[speaking].mean())
            if silent.any() and speaking.any() and openness[speaking].mean() > 0 else float("nan"))
    grey, ref = luma(frames), luma(reference)
    mask = _face_mask(face, size)
    ssim = float(np.mean([aligned_ssim(g, ref, mask) for g in grey]))
    outside = np.ones((size, size), bool)
    mx0, my0, mx1, my1 = mouth_box(face, size)
    outside[my0:my1, mx0:mx1] = False
    stability = float(np.abs(np.diff(grey, axis=0))[:, outside].mean())
    return QualityReport(r, lag, rest, ssim, stability, t, int(silent.sum()), int(speaking.sum()))
