"""ArcFace face embedding (InsightFace's recognition ONNX models, e.g. Hallo's glintr100.onnx) on ONNX Runtime.

The face is aligned by the similarity transform (Umeyama least squares) that maps its five SCRFD landmarks onto
ArcFace's 112x112 template, warped with black borders, fed as RGB (x - mean) / std and the raw (un-normalised)
output vector is the embedding, which is what Hallo's image-projection model was trained on. Models that normalise
their input inside the graph (a Sub and a Mul among the first nodes) get raw pixels, as InsightFace does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .face import Face

# eyes, nose tip, mouth corners in a 112x112 aligned face
TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                         [70.7299, 92.2041]], np.float64)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) matrix of the rotation + uniform scale + translation mapping src (n, 2) onto dst (n, 2) in the
    least-squares sense (Umeyama 1991, reflections excluded)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    cov = dc.T @ sc / len(src)
    u, s, vt = np.linalg.svd(cov)
    sign = np.array([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rot = u @ np.diag(sign) @ vt
    scale = (s * sign).sum() / sc.var(0).sum()
    return np.concatenate([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]], axis=1)


def aligned_face(rgb: np.ndarray, kps, size: int = 112) -> np.ndarray:
    """The (size, size, 3) uint8 face aligned to ArcFace's template (size a multiple of 112 or 128)."""
    import cv2

    if size % 112 == 0:
        template = TEMPLATE_112 * (size / 112)
    else:  # 128-based models shift the template by 8 px (scaled)
        template = TEMPLATE_112 * (size / 128) + np.array([8.0 * size / 128, 0.0])
    matrix = similarity_transform(np.asarray(kps, np.float64), template)
    return cv2.warpAffine(rgb, matrix, (size, size), borderValue=0.0)


def normalises_inside(path: Path) -> bool:
    """InsightFace's rule: a graph whose first 8 nodes include a Sub and a Mul takes raw 0..255 pixels."""
    try:
        import onnx
    except ImportError:  # Hallo's glintr100 has no such nodes; without onnx assume the common case
        return False
    names = [n.name for n in onnx.load(str(path), load_external_data=False).graph.node[:8]]
    return any(n.startswith(("Sub", "_minus")) for n in names) and any(n.startswith(("Mul", "_mul")) for n in names)


class ArcFaceEmbedder:
    """embedder(rgb, face) -> (512,) float32 embedding of `face` (which must carry SCRFD landmarks)."""

    def __init__(self, session, raw_pixels: bool = False):
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name, self.size = inp.name, int(inp.shape[2])
        self.mean, self.std = (0.0, 1.0) if raw_pixels else (127.5, 127.5)

    def __call__(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        if face.kps is None:
            raise InputError("the ArcFace model needs five face landmarks; the face detector gave none")
        crop = aligned_face(rgb, face.kps, self.size).astype(np.float32)
        blob = ((crop - self.mean) / self.std).transpose(2, 0, 1)[None]  # h w c -> 1 c h w
        return self.session.run(None, {self.input_name: blob})[0].reshape(-1).astype(np.float32)
