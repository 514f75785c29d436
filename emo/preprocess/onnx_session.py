"""ONNX Runtime sessions for the preprocessing models (face analysis, vocal separation), with one-line errors."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError


def ort_session(path: Path, what: str, providers: list[str] | None = None):
    """An ONNX Runtime session for the `what` model at `path` (e.g. "face model"), or an InputError naming it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError(f"running the {what} {path} needs onnxruntime (pip install onnxruntime)") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types for corrupt or foreign graphs
        raise InputError(f"cannot load {what} {path}: {str(e).splitlines()[0]}") from None
