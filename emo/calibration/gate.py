"""The accuracy gate: quantized graphs next to the fp32 ones on held-out inputs, through ONNX Runtime on the CPU.

Two views, both written into the manifest:
  - per component: both graphs on the same held-out feeds (recorded while the fp32 export rendered the held-out
    pairs), max / mean absolute error, the reference's largest magnitude for scale, and cosine similarity;
  - end to end: the held-out pairs rendered whole (clip chaining, every step) by the fp32 and the quantized export
    from the same noise, PSNR of the decoded frames in [0, 1]. The build stops below `min_psnr_db`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..quality.render import psnr
from .record import Feed

DEFAULT_MIN_PSNR_DB = 30.0


@dataclass(frozen=True)
class ComponentError:
    max_abs: float
    mean_abs: float
    max_ref: float  # largest |fp32 output|
    cosine: float  # lowest over feeds and outputs
    worst_output: str
    feeds: int


@dataclass(frozen=True)
class FrameError:
    psnr_db: float
    max_abs: float
    mean_abs: float
    frames: int


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def component_error(fp32_graph: Path, quant_graph: Path, feeds: list[Feed], threads: int = 0) -> ComponentError:
    ref_s, got_s = _session(fp32_graph, threads), _session(quant_graph, threads)
    names = [o.name for o in ref_s.get_outputs()]
    worst, max_abs, total, count, max_ref, cosine = names[0], 0.0, 0.0, 0, 0.0, 1.0
    for feed in feeds:
        for name, ref, got in zip(names, ref_s.run(None, feed), got_s.run(None, feed), strict=True):
            ref, got = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
            err = np.abs(got - ref)
            if err.max(initial=0.0) > max_abs:
                worst, max_abs = name, float(err.max())
            total, count = total + float(err.sum()), count + err.size
            max_ref = max(max_ref, float(np.abs(ref).max(initial=0.0)))
            norm = np.linalg.norm(ref) * np.linalg.norm(got)
            if norm > 0:
                cosine = min(cosine, float(ref @ got / norm))
    return ComponentError(max_abs, total / max(count, 1), max_ref, cosine, worst, len(feeds))


def frame_error(ref: np.ndarray, got: np.ndarray) -> FrameError:
    """Frames in [0, 1] -> PSNR (peak 1) over all of them, and the largest / mean absolute difference."""
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    return FrameError(psnr(got, ref), float(diff.max()), float(diff.mean()), ref.shape[0])


def gate_record(frames: FrameError, components: dict[str, ComponentError], min_psnr_db: float,
                accepted: bool, lip_sync_r: dict[str, list[float]] | None = None) -> dict:
    """The gate's verdict and measurements; lip_sync_r: per variant (fp32, the format), each held-out pair's
    lip-sync score (emo.quality), reported beside the PSNR the gate decides on."""
    passed = frames.psnr_db >= min_psnr_db
    return {"min_psnr_db": min_psnr_db, "passed": passed, "accepted_loss": accepted and not passed,
            "lip_sync_r": {k: [round(r, 4) for r in v] for k, v in (lip_sync_r or {}).items()},
            "frames": {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
                       for k, v in asdict(frames).items()},
            "components": {name: {k: (round(v, 8) if isinstance(v, float) else v) for k, v in asdict(e).items()}
                           for name, e in components.items()}}
