"""Faces found in an image, and the detector that needs no model files: OpenCV's Haar cascades (inside the wheel).

The Haar detector finds frontal faces and, inside each, the eyes; the mouth position follows from the eyes and the
box with standard facial proportions. That is enough for the crop and the face / lip region masks. When the model
directory has Hallo's InsightFace ONNX models, `face_models.py` uses those instead (SCRFD boxes + five landmarks,
ArcFace embedding).
"""
from __future__ import annotations

import threading
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


MIN_SIDE_RATIO = 0.4  # Haar boxes smaller than this fraction of the largest one's side are dropped


class HaarFaceDetector:
    """OpenCV's Haar cascades. A CascadeClassifier is not safe to share between threads (concurrent calls return
    wrong boxes or raise cv2.error), so each thread loads its own set on first use; one detector may be shared.

    Haar cascades fire on textures too; a detection much smaller than the largest face (side under
    MIN_SIDE_RATIO of it) is taken for one of those and dropped."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._cascades()  # fail early (missing files) in the thread that builds the detector

    def _cascades(self) -> tuple[list, object]:
        if not hasattr(self._local, "faces"):
            import cv2

            if not hasattr(cv2, "CascadeClassifier"):  # OpenCV 5 moved the Haar cascades out of its main package
                raise RuntimeError(f"OpenCV {cv2.__version__} has no Haar cascades: install "
                                   "opencv-python-headless < 5, or give InsightFace models with --face-models DIR")
            root = cv2.data.haarcascades
            faces = [cv2.CascadeClassifier(root + n) for n in
                     ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml")]
            eyes = cv2.CascadeClassifier(root + "haarcascade_eye.xml")
            if any(c.empty() for c in faces) or eyes.empty():
                raise RuntimeError("OpenCV's Haar cascades are missing (install opencv-python-headless < 5)")
            self._local.faces, self._local.eyes = faces, eyes
        return self._local.faces, self._local.eyes

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """All faces in an (H, W, 3) uint8 RGB image, largest first."""
        import cv2

        face_cascades, eye_cascade = self._cascades()
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        min_side = max(24, min(gray.shape) // 12)
        boxes: list = []
        for cascade in face_cascades:  # the second cascade only runs when the first finds nothing
            boxes = list(cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side)))
            if boxes:
                break
        if boxes:
            largest = max(int(b[2]) for b in boxes)
            boxes = [b for b in boxes if b[2] >= MIN_SIDE_RATIO * largest]
        faces = [self._landmarks(gray, tuple(int(v) for v in b), eye_cascade) for b in boxes]
        return sorted(faces, key=lambda f: f.area, reverse=True)

    @staticmethod
    def _landmarks(gray: np.ndarray, box: tuple[int, int, int, int], eye_cascade) -> Face:
        x, y, w, h = box
        upper = gray[y: y + h // 2, x: x + w]
        eyes = eye_cascade.detectMultiScale(upper, scaleFactor=1.1, minNeighbors=4, minSize=(w // 10, w // 10))
        centers = sorted(((x + ex + ew / 2, y + ey + eh / 2) for ex, ey, ew, eh in eyes), key=lambda c: c[0])
        box = (float(x), float(y), float(x + w), float(y + h))
        if len(centers) >= 2:  # the two outermost detections
            return face_from_eyes(box, centers[0], centers[-1], "haar-eyes")
        return face_from_eyes(box, *estimated_eyes(box), "estimated")
