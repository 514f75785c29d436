"""Recording the inputs every graph receives while an export renders real media.

The recorder is the onnxruntime backend itself with `run_arrays` wrapped: the renderer drives it exactly as
`emo-run` does, so the feeds are assembled by the runtime's own code under the IO spec's names (whatever the
denoiser's inputs are, they are recorded as the runtime builds them), and calibration sees the activations of real
renders: every denoising step's timestep, chained clips with their motion frames, the reference K/V.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ..config import RunConfig
from ..quality.render import render_and_measure
from ..runtime.onnxruntime_backend import OnnxRuntimeBackend
from ..runtime.renderer import Renderer
from .media_set import MediaPair

Feed = dict[str, np.ndarray]


class RecordingBackend(OnnxRuntimeBackend):
    """Runs the graphs of an export directory and keeps the feeds of `components` (arrays in the graphs' input
    dtypes), copied: the tensors they come from may be reused."""

    def __init__(self, export_dir: str | Path, components: Iterable[str], threads: int = 0):
        super().__init__(export_dir, "cpu", threads)
        self.feeds: dict[str, list[Feed]] = {c: [] for c in components}

    def run_arrays(self, component: str, arrays: Feed) -> dict[str, torch.Tensor]:
        if component in self.feeds:
            self.feeds[component].append({k: a.copy() for k, a in arrays.items()})
        return super().run_arrays(component, arrays)


@dataclass
class Renders:
    frames: np.ndarray  # every pair's frames, (N, H, W, 3) float32 in [0, 1]
    lip_sync_r: list[float]  # per pair: emo.quality's lip-sync score of its frames


def render_pairs(backend: OnnxRuntimeBackend, pairs: list[MediaPair], run: RunConfig, seed: int,
                 on_pair: Callable[[MediaPair], None] | None = None) -> Renders:
    """Render every pair (pair i with seed + i), and score each one's lip sync."""
    renderer = Renderer(backend)
    frames, scores = [], []
    for i, pair in enumerate(pairs):
        if on_pair is not None:
            on_pair(pair)
        report, pair_frames = render_and_measure(renderer, run, pair.image, pair.audio, seed + i)
        frames.append(pair_frames)
        scores.append(report.lip_sync_r)
    return Renders(np.concatenate(frames), scores)
