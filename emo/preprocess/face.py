"""Face detection with landmarks, using the Haar cascades that ship inside the OpenCV wheel.

The detector finds frontal faces and, inside each, the eyes; the mouth position follows from the eyes and the box
with standard facial proportions. That is enough for the crop and the face / lip region masks; it needs no model
download. (Hallo's own InsightFace/MediaPipe models are not redistributable inside a wheel.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    left_eye: tuple[float, float]
    right_eye: tuple[float, float]
    mouth: tuple[float, float]
    eyes_found: bool  # False: eye positions estimated from the box

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return (x1 - x0) * (y1 - y0)


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
        found = len(centers) >= 2
        if found:  # the two outermost detections
            left, right = centers[0], centers[-1]
        else:
            left, right = (x + 0.32 * w, y + 0.40 * h), (x + 0.68 * w, y + 0.40 * h)
        eye_mid = ((left[0] + right[0]) / 2, (left[1] + right[1]) / 2)
        mouth = (eye_mid[0], min(eye_mid[1] + 0.42 * h, y + 0.92 * h))
        return Face((float(x), float(y), float(x + w), float(y + h)), left, right, mouth, found)
