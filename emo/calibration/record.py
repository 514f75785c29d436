"""Recording the inputs every graph receives while an export renders real media.

The recorder is the onnxruntime backend itself with `run_arrays` wrapped: the renderer drives it exactly as
`emo-run` does, so the feeds are assembled by the runtime's own code under the IO spec's names (whatever the
denoiser's inputs are, they are recorded as the runtime builds them), and calibration sees the activations of real
renders: every denoising step's timestep, chained clips with their motion frames, the reference K/V.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ..config import RunConfig
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


def render_pairs(backend: OnnxRuntimeBackend, pairs: list[MediaPair], run: RunConfig, seed: int,
                 on_pair: Callable[[MediaPair], None] | None = None) -> np.ndarray:
    """Render every pair (pair i with seed + i) -> all frames, (N, H, W, 3) float32 in [0, 1]."""
    renderer = Renderer(backend)
    frames = []
    for i, pair in enumerate(pairs):
        if on_pair is not None:
            on_pair(pair)
        prepared = renderer.prepare(pair.image, pair.audio, run)
        frames.extend(renderer.stream(prepared, run, seed=seed + i))
    return np.concatenate(frames)
