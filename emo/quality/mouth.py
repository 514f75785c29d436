"""How open the mouth is in each frame: the dark area of the mouth cavity inside a box around the lips.

An open mouth shows a cavity much darker than the skin around it; closed lips are not that dark. Each pixel in
the mouth box counts as dark in proportion to how far its luma lies below half the skin's (fully dark at a fifth
of it), so a blurred cavity still counts by its area. The box is the face's lip box (from the face found in the
reference) widened and heightened to hold an open mouth and small head motion.
"""
from __future__ import annotations

import numpy as np

from ..preprocess.face import Face

MOUTH_BOX_WIDTH = 1.4  # times the lip box's width
MOUTH_BOX_HEIGHT = 2.6  # times its height


def luma(frames: np.ndarray) -> np.ndarray:
    """(…, 3) RGB in [0, 1] or uint8 -> (…) luma in [0, 1]."""
    x = np.asarray(frames, np.float32)
    if np.issubdtype(np.asarray(frames).dtype, np.integer):
        x = x / 255.0
    return x @ np.array([0.299, 0.587, 0.114], np.float32)


def _box(centre_x: float, centre_y: float, half_w: float, half_h: float, size: int) -> tuple[int, int, int, int]:
    x0, x1 = int(max(0, np.floor(centre_x - half_w))), int(min(size, np.ceil(centre_x + half_w)))
    y0, y1 = int(max(0, np.floor(centre_y - half_h))), int(min(size, np.ceil(centre_y + half_h)))
    return x0, y0, x1, y1


def mouth_box(face: Face, size: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the region measured for the mouth, in the frame's pixels."""
    x0, y0, x1, y1 = face.lip_box
    return _box((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 * MOUTH_BOX_WIDTH, (y1 - y0) / 2 * MOUTH_BOX_HEIGHT, size)


def skin_luma(reference: np.ndarray, face: Face) -> float:
    """The median luma of the face box without the mouth box, in the reference frame."""
    y = luma(reference)
    size = y.shape[0]
    fx0, fy0, fx1, fy1 = (int(round(v)) for v in face.box)
    mask = np.zeros(y.shape, bool)
    mask[max(0, fy0):min(size, fy1), max(0, fx0):min(size, fx1)] = True
    mx0, my0, mx1, my1 = mouth_box(face, size)
    mask[my0:my1, mx0:mx1] = False
    return float(np.median(y[mask])) if mask.any() else float(np.median(y))


def mouth_openness(frames: np.ndarray, face: Face, skin: float) -> np.ndarray:
    """frames (T, S, S, 3) -> (T,) dark-cavity area in the mouth box, in pixels."""
    size = frames.shape[1]
    x0, y0, x1, y1 = mouth_box(face, size)
    y = luma(frames[:, y0:y1, x0:x1])
    hi, lo = 0.5 * skin, 0.2 * skin
    return np.clip((hi - y) / max(hi - lo, 1e-6), 0.0, 1.0).sum(axis=(1, 2))
