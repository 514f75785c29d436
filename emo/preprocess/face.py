"""Faces found in an image, and the detector that needs no model files: OpenCV's Haar cascades (inside the wheel).

The Haar detector finds frontal faces and, inside each, the eyes; the mouth position follows from the eyes and the
box with standard facial proportions. That is enough for the crop and the face / lip region masks. When the model
directory has Hallo's InsightFace ONNX models, `face_models.py` uses those instead (SCRFD boxes + five landmarks,
ArcFace embedding).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

Point = tuple[float, float]
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


@dataclass(frozen=True)
class Face:
    box: Box
    left_eye: Point
    right_eye: Point
    mouth: Point
    lip_box: Box
    landmarks: str  # where the points come from: "scrfd", "haar-eyes" or "estimated" (from the box alone)
    score: float = 1.0
    kps: tuple[Point, ...] | None = None  # SCRFD's five points (eyes, nose, mouth corners), for ArcFace alignment

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return (x1 - x0) * (y1 - y0)

    def mapped(self, fn: Callable[[Point], Point]) -> "Face":
        """The same face with every coordinate passed through `fn` (a translation + scale, e.g. into a crop)."""
        def box(b: Box) -> Box:
            return (*fn(b[:2]), *fn(b[2:]))

        return replace(self, box=box(self.box), left_eye=fn(self.left_eye), right_eye=fn(self.right_eye),
                       mouth=fn(self.mouth), lip_box=box(self.lip_box),
                       kps=None if self.kps is None else tuple(fn(p) for p in self.kps))


def estimated_eyes(box: Box) -> tuple[Point, Point]:
    """Eye positions from the face box alone (standard proportions)."""
    x, y, w, h = box[0], box[1], box[2] - box[0], box[3] - box[1]
    return (x + 0.32 * w, y + 0.40 * h), (x + 0.68 * w, y + 0.40 * h)


def face_from_eyes(box: Box, left: Point, right: Point, landmarks: str, score: float = 1.0) -> Face:
    """A face whose mouth and lip box follow from the eyes and the box (no mouth landmarks known)."""
    h = box[3] - box[1]
    eye_mid = ((left[0] + right[0]) / 2, (left[1] + right[1]) / 2)
    mouth = (eye_mid[0], min(eye_mid[1] + 0.42 * h, box[1] + 0.92 * h))
    w = box[2] - box[0]
    lip = (mouth[0] - 0.2 * w, mouth[1] - 0.07 * h, mouth[0] + 0.2 * w, mouth[1] + 0.07 * h)
    return Face(box, left, right, mouth, lip, landmarks, score)


class HaarFaceDetector:
    def __init__(self) -> None:
        import cv2

        root = cv2.data.haarcascades
        self._faces = [cv2.CascadeClassifier(root + n) for n in
                       ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml")]
        self._eyes = cv2.CascadeClassifier(root + "haarcascade_eye.xml")
        if any(c.empty() for c in self._faces) or self._eyes.empty():
            raise RuntimeError("OpenCV's Haar cascades are missing (install opencv-python-headless < 5)")

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """All faces in an (H, W, 3) uint8 RGB image, largest first."""
        import cv2

        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        min_side = max(24, min(gray.shape) // 12)
        boxes: list = []
        for cascade in self._faces:  # the second cascade only runs when the first finds nothing
            boxes = list(cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side)))
            if boxes:
                break
        faces = [self._landmarks(gray, tuple(int(v) for v in b)) for b in boxes]
        return sorted(faces, key=lambda f: f.area, reverse=True)

    def _landmarks(self, gray: np.ndarray, box: tuple[int, int, int, int]) -> Face:
        x, y, w, h = box
        upper = gray[y: y + h // 2, x: x + w]
        eyes = self._eyes.detectMultiScale(upper, scaleFactor=1.1, minNeighbors=4, minSize=(w // 10, w // 10))
        centers = sorted(((x + ex + ew / 2, y + ey + eh / 2) for ex, ey, ew, eh in eyes), key=lambda c: c[0])
        box = (float(x), float(y), float(x + w), float(y + h))
        if len(centers) >= 2:  # the two outermost detections
            return face_from_eyes(box, centers[0], centers[-1], "haar-eyes")
        return face_from_eyes(box, *estimated_eyes(box), "estimated")
