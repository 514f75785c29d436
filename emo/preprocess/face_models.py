"""Hallo's face-analysis directory (`face_analysis/models/*.onnx`, InsightFace's antelopev2 set) on ONNX Runtime.

Each .onnx file is recognised by its inputs and outputs, as InsightFace does: a detector has 6, 9, 10 or 15
outputs; a recognition model takes a square image of 112 or more pixels (multiple of 16) and gives one vector.
Landmark (192x192) and gender/age (96x96) models are not needed and are skipped; so is MediaPipe's
`.task` file (Hallo uses it for the lip/face boxes, which SCRFD's five points give here).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .arcface import ArcFaceEmbedder, normalises_inside
from .onnx_session import ort_session
from .scrfd import DETECTOR_OUTPUTS, ScrfdDetector

LIKELY = ("scrfd", "det_", "glintr", "w600k", "arcface")  # tried first, so that the big unused models stay unloaded


def role(session) -> str | None:
    """'detection', 'recognition' or None (a model this runtime does not use)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = inputs[0].shape
    if len(outputs) in DETECTOR_OUTPUTS:
        return "detection"
    side = shape[2] if len(shape) == 4 else None
    if len(outputs) == 1 and isinstance(side, int) and side == shape[3] and side >= 112 and side % 16 == 0 \
            and side != 192:
        return "recognition"
    return None


@dataclass
class FaceModels:
    detector: ScrfdDetector
    embedder: ArcFaceEmbedder | None
    files: dict[str, Path]  # role -> file


def find_face_dir(path: Path) -> Path:
    """Accept the face_analysis dir itself, its models/ dir, or a whole pretrained_models dir."""
    for candidate in (path / "face_analysis" / "models", path / "models", path):
        if candidate.is_dir() and any(candidate.glob("*.onnx")):
            return candidate
    raise InputError(f"no face-analysis ONNX models (*.onnx) in {path}")


def load_face_models(path: str | Path, providers: list[str] | None = None) -> FaceModels:
    """A detector and a recognition model: the usual file names first, then the rest in name order."""
    directory = find_face_dir(Path(path))
    candidates = sorted(directory.glob("*.onnx"), key=lambda f: (not f.name.lower().startswith(LIKELY), f.name))
    sessions, files = {}, {}
    for file in candidates:
        if len(sessions) == 2:
            break
        session = ort_session(file, "face model", providers)
        kind = role(session)
        if kind is not None and kind not in sessions:
            sessions[kind], files[kind] = session, file
    if "detection" not in sessions:
        raise InputError(f"{directory} has no SCRFD face detector (e.g. scrfd_10g_bnkps.onnx)")
    embedder = None
    if "recognition" in sessions:
        embedder = ArcFaceEmbedder(sessions["recognition"], normalises_inside(files["recognition"]))
    return FaceModels(ScrfdDetector(sessions["detection"]), embedder, files)


def default_face_models(model_dir: str | Path) -> Path | None:
    """<model_dir>/face_analysis when it holds ONNX models, else None."""
    directory = Path(model_dir) / "face_analysis"
    return directory if any(directory.glob("models/*.onnx")) else None
