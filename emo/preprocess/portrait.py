"""Reference portrait -> model inputs, following Hallo's image processor.

Crop a square around the largest face, resize to the render size, then build: the reference pixels in [-1, 1];
the face-region image (the face box expanded by `face_expand_ratio`, binary); the full / face / lip attention masks
at the four latent resolutions (Hallo blurs 64x64 box masks, then resizes them); and the 512-d face embedding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from .face import Face, HaarFaceDetector

LIP_EXPAND = 2.0  # Hallo's lip-box expansion
MASK_SIZE = 64  # Hallo blurs the masks at 64x64


@dataclass
class Portrait:
    pixels: torch.Tensor  # (3, S, S) in [-1, 1]
    face_region: torch.Tensor  # (3, S, S) 0/1
    masks: list[torch.Tensor]  # per level (3, r*r): full (background), face, lip
    face_emb: torch.Tensor  # (512,)
    face: Face  # in crop coordinates
    faces_found: int
    source_box: tuple[float, float, float, float]  # the face used, in the source image's pixels (x0, y0, x1, y1)


def expand_box(box: tuple[float, float, float, float], ratio: float, size: int) -> tuple[int, int, int, int]:
    """Scale a box about its centre and shift it inside the image (Hallo's expand_region)."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    hw, hh = (x1 - x0) * ratio // 2, (y1 - y0) * ratio // 2
    x0, x1, y0, y1 = cx - hw, cx + hw, cy - hh, cy + hh
    if x0 < 0:
        x1, x0 = x1 - x0, 0
    if x1 > size:
        x0, x1 = x0 - (x1 - size), size
    if y0 < 0:
        y1, y0 = y1 - y0, 0
    if y1 > size:
        y0, y1 = y0 - (y1 - size), size
    return round(max(x0, 0)), round(x1), round(max(y0, 0)), round(y1)


def square_crop(face: Face, height: int, width: int, scale: float) -> tuple[int, int, int]:
    """(x0, y0, side) of a square `scale` times the face size around the face, kept inside the image."""
    x0, y0, x1, y1 = face.box
    side = int(min(max(x1 - x0, y1 - y0) * scale, height, width))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(min(max(cx - side / 2, 0), width - side))
    top = int(min(max(cy - side / 2, 0), height - side))
    return left, top, side


def _box_mask(size: int, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, x1, y0, y1 = box
    m = np.zeros((size, size), np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


def _blur(mask: np.ndarray, kernel: int) -> np.ndarray:
    import cv2

    blurred = cv2.GaussianBlur(cv2.resize(mask, (MASK_SIZE, MASK_SIZE)), (kernel, kernel), 0)
    return cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX)


def region_masks(face_mask: np.ndarray, lip_mask: np.ndarray, latent: int) -> list[torch.Tensor]:
    """Blurred 64x64 masks -> per level (3, r*r) [full = background, face without lips, lips], r = latent / 2**k."""
    import cv2
    from PIL import Image

    face_blur, lip_blur = _blur(face_mask, 51), _blur(lip_mask, 31)
    background = ((1.0 - face_blur / 255.0) * 255).astype(np.uint8)
    face_only = cv2.subtract(face_blur, lip_blur)
    levels = []
    for k in range(4):
        r = latent // 2 ** k
        parts = [np.asarray(Image.fromarray(m).resize((r, r), Image.BILINEAR), np.float32).reshape(-1) / 255.0
                 for m in (background, face_only, lip_blur)]
        levels.append(torch.from_numpy(np.stack(parts)))
    return levels


def standin_embedding(face_pixels: np.ndarray) -> torch.Tensor:
    """A deterministic 512-d vector from the face crop, for demos without an ArcFace model."""
    from PIL import Image

    small = np.asarray(Image.fromarray(face_pixels).convert("L").resize((16, 16), Image.BILINEAR), np.float32)
    x = torch.from_numpy((small.reshape(-1) - small.mean()) / (small.std() + 1e-6))
    proj = torch.randn(512, x.numel(), generator=torch.Generator().manual_seed(512)) / x.numel() ** 0.5
    return proj @ x


def prepare_portrait(rgb: np.ndarray, size: int, latent: int, detector=None, face_expand_ratio: float = 1.2,
                     crop_scale: float = 2.0, embedder=None, source: str = "image") -> Portrait:
    """rgb (H, W, 3) uint8 -> the model's reference inputs at `size`² (latent = size / 8).

    detector: anything with detect(rgb) -> list[Face] largest first (default: Haar); embedder: (rgb, face) -> (512,)
    face embedding in the image's own coordinates (default: a deterministic stand-in from the face crop)."""
    from PIL import Image

    detector = detector or HaarFaceDetector()
    faces = detector.detect(rgb)
    if not faces:
        raise InputError(f"no face found in {source}")
    face = faces[0]
    left, top, side = square_crop(face, rgb.shape[0], rgb.shape[1], crop_scale)
    crop = np.array(Image.fromarray(rgb[top:top + side, left:left + side]).resize((size, size), Image.LANCZOS))
    s = size / side

    def to_crop(p: tuple[float, float]) -> tuple[float, float]:
        return (p[0] - left) * s, (p[1] - top) * s

    cface = face.mapped(to_crop)
    face_mask = _box_mask(size, expand_box(cface.box, face_expand_ratio, size))
    lip_mask = _box_mask(size, expand_box(cface.lip_box, LIP_EXPAND, size))
    if embedder is not None:  # ArcFace aligns the face from the full image, as Hallo does
        emb = torch.as_tensor(embedder(rgb, face))
    else:
        fx0, fx1, fy0, fy1 = expand_box(cface.box, 1.0, size)
        emb = standin_embedding(crop[fy0:fy1, fx0:fx1])
    pixels = torch.from_numpy(crop).permute(2, 0, 1).float() / 127.5 - 1  # h w c -> c h w, [-1, 1]
    region = torch.from_numpy(face_mask > 0).float().expand(3, -1, -1).clone()
    return Portrait(pixels, region, region_masks(face_mask, lip_mask, latent), emb.float(), cface, len(faces),
                    face.box)
