"""EchoMimic's reference image and face mask, as its inference script builds them from one detected face box.

The face mask is the box grown by 10 % of its height / width on each side (binary, 0/1). The image and the mask
are cropped to the box grown by 50 %, clipped to the image, then squared about the crop's centre (side = the
shorter side) and resized to the render size (bilinear, as OpenCV's default). The box comes from our face
detector (EchoMimic uses MTCNN; faces below its 0.8 confidence are not used there either).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MASK_GROW = 0.1
CROP_GROW = 0.5


@dataclass
class EchoPortrait:
    pixels: torch.Tensor  # (3, S, S) in [-1, 1]
    face_mask: torch.Tensor  # (1, S, S) 0/1: the face locator's input
    crop: tuple[int, int, int, int]  # (x0, y0, x1, y1) of the square crop in the source image
    faces_found: int = 1
    source_box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # the face used, in the image's pixels


def _int_box(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(v) for v in np.round(np.asarray(box, dtype=np.float64)).astype(int))
    return x0, y0, x1, y1


def face_mask(height: int, width: int, box: tuple[float, float, float, float]) -> np.ndarray:
    """uint8 (H, W): 255 inside the box grown by MASK_GROW. Slices use numpy's own semantics, as the reference's
    do (a box reaching past the top or left edge is not clipped at 0 there)."""
    x0, y0, x1, y1 = _int_box(box)
    dy, dx = int((y1 - y0) * MASK_GROW), int((x1 - x0) * MASK_GROW)
    mask = np.zeros((height, width), np.uint8)
    mask[y0 - dy:y1 + dy, x0 - dx:x1 + dx] = 255
    return mask


def square_crop_rect(height: int, width: int, box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the box grown by CROP_GROW and clipped to the image, squared about its centre."""
    bx0, by0, bx1, by1 = _int_box(box)
    dy, dx = int((by1 - by0) * CROP_GROW), int((bx1 - bx0) * CROP_GROW)
    x0, y0, x1, y1 = max(0, bx0 - dx), max(0, by0 - dy), min(bx1 + dx, width), min(by1 + dy, height)
    side = min(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    nx0, ny0 = max(0, cx - side // 2), max(0, cy - side // 2)
    nx1, ny1 = min(width, nx0 + side), min(height, ny0 + side)
    if nx1 - nx0 != ny1 - ny0:
        side = min(nx1 - nx0, ny1 - ny0)
        nx1, ny1 = nx0 + side, ny0 + side
    return nx0, ny0, nx1, ny1


def echo_portrait(rgb: np.ndarray, box: tuple[float, float, float, float], size: int, faces_found: int = 1
                  ) -> EchoPortrait:
    """rgb (H, W, 3) uint8 and the face box (x0, y0, x1, y1) in its pixels -> the model's inputs at size x size."""
    import cv2

    h, w = rgb.shape[:2]
    mask = face_mask(h, w, box)
    x0, y0, x1, y1 = square_crop_rect(h, w, box)
    image = cv2.resize(np.ascontiguousarray(rgb[y0:y1, x0:x1]), (size, size))
    mask = cv2.resize(np.ascontiguousarray(mask[y0:y1, x0:x1]), (size, size))
    pixels = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1) * 2 - 1  # h w c -> c h w
    return EchoPortrait(pixels, torch.from_numpy(mask)[None].float() / 255.0, (x0, y0, x1, y1), faces_found,
                        tuple(float(v) for v in box))
