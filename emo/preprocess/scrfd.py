"""SCRFD face detection (InsightFace's `scrfd_10g_bnkps.onnx`, shipped in Hallo's face_analysis/models) on ONNX Runtime.

The model sees the image letterboxed into `det_size` (top-left aligned, black padding), RGB, (x - 127.5) / 128.
Per stride s of 8, 16, 32 it predicts, for 2 anchors at every cell centre (x·s, y·s): a face score, the distances
(left, top, right, bottom) to the box edges and the offsets of five landmarks (eyes, nose, mouth corners), all in
units of s. Boxes over the threshold are decoded, scaled back to the image and reduced by greedy NMS, as in
InsightFace's own decoder. Models with 6 outputs (no landmarks) or 5 strides (10 / 15 outputs) decode the same way.
"""
from __future__ import annotations

import numpy as np

from .face import Face, estimated_eyes, face_from_eyes

DETECTOR_OUTPUTS = (6, 9, 10, 15)  # 3 or 5 strides x (score, box[, landmarks])
MOUTH_HEIGHT = 0.4  # lip box height / mouth-corner distance (closed mouth), before Hallo's 2x expansion


def letterbox(rgb: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Resize into (width, height) `size` keeping the aspect ratio, top-left aligned -> (image, scale)."""
    import cv2

    width, height = size
    h, w = rgb.shape[:2]
    if h / w > height / width:
        new_h, new_w = height, int(height / (h / w))
    else:
        new_w, new_h = width, int(width * (h / w))
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(rgb, (new_w, new_h))
    return canvas, new_h / h


def anchor_centres(height: int, width: int, stride: int, anchors: int) -> np.ndarray:
    """(height·width·anchors, 2) cell-centre pixel positions (x, y), row-major, each repeated per anchor."""
    ys, xs = np.mgrid[:height, :width]
    centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride  # h w 2 -> (h w) 2
    return np.repeat(centres, anchors, axis=0)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy non-maximum suppression (pixel-inclusive areas, as InsightFace) -> kept indices, best first."""
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= threshold]
    return keep


class ScrfdDetector:
    """detect(rgb) -> faces, largest first, in the image's pixel coordinates."""

    def __init__(self, session, det_size: tuple[int, int] = (640, 640), threshold: float = 0.5,
                 nms_threshold: float = 0.4):
        self.session = session
        inputs, outputs = session.get_inputs(), session.get_outputs()
        count = len(outputs)
        if count not in DETECTOR_OUTPUTS:
            raise ValueError(f"a SCRFD detector has {DETECTOR_OUTPUTS} outputs, this one has {count}")
        self.levels = 3 if count in (6, 9) else 5
        self.strides = (8, 16, 32, 64, 128)[:self.levels]
        self.anchors = 2 if self.levels == 3 else 1
        self.with_kps = count in (9, 15)
        self.batched = len(outputs[0].shape) == 3
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in outputs]
        fixed = inputs[0].shape[2:4]
        self.det_size = (fixed[1], fixed[0]) if all(isinstance(d, int) for d in fixed) else det_size
        self.threshold, self.nms_threshold = threshold, nms_threshold

    def raw(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """-> boxes (n, 4), scores (n,), landmarks (n, 5, 2) or None, after NMS, in image pixels."""
        image, scale = letterbox(rgb, self.det_size)
        blob = ((image.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]  # h w c -> 1 c h w
        outs = self.session.run(self.output_names, {self.input_name: blob})
        if self.batched:
            outs = [o[0] for o in outs]
        height, width = blob.shape[2:]
        n = self.levels
        boxes, scores, kps = [], [], []
        for i, stride in enumerate(self.strides):
            centres = anchor_centres(height // stride, width // stride, stride, self.anchors)
            score = outs[i].reshape(-1)
            keep = score >= self.threshold
            dist = outs[i + n].reshape(-1, 4)[keep] * stride
            c = centres[keep]
            boxes.append(np.concatenate([c - dist[:, :2], c + dist[:, 2:]], axis=1))
            scores.append(score[keep])
            if self.with_kps:
                offsets = outs[i + 2 * n].reshape(-1, 5, 2)[keep] * stride  # (k, 10) -> (k, 5, 2)
                kps.append(c[:, None, :] + offsets)
        box, score = np.concatenate(boxes) / scale, np.concatenate(scores)
        keep = nms(box, score, self.nms_threshold)
        points = np.concatenate(kps)[keep] / scale if self.with_kps else None
        return box[keep], score[keep], points

    def detect(self, rgb: np.ndarray) -> list[Face]:
        boxes, scores, points = self.raw(rgb)
        points = [None] * len(boxes) if points is None else points
        return sorted(map(self._face, boxes, scores, points), key=lambda f: f.area, reverse=True)

    @staticmethod
    def _face(box: np.ndarray, score: float, kps: np.ndarray | None) -> Face:
        b = tuple(float(v) for v in box)
        if kps is None:  # a detector without landmarks: standard proportions from the box
            return face_from_eyes(b, *estimated_eyes(b), "estimated", float(score))
        pts = tuple((float(x), float(y)) for x, y in kps)
        (mlx, mly), (mrx, mry) = pts[3], pts[4]
        mouth = ((mlx + mrx) / 2, (mly + mry) / 2)
        half = MOUTH_HEIGHT / 2 * float(np.hypot(mrx - mlx, mry - mly))
        lip = (min(mlx, mrx), mouth[1] - half, max(mlx, mrx), mouth[1] + half)
        return Face(b, pts[0], pts[1], mouth, lip, "scrfd", float(score), pts)
