"""Recording the inputs every graph receives while an export renders real media.

The recorder is the onnxruntime backend itself with `run` wrapped: the renderer drives it exactly as `emo-run`
does, so the feeds are assembled by the runtime's own code under the IO spec's names (whatever the denoiser's
inputs are, they are recorded as the runtime builds them), and calibration sees the activations of real
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
    """Runs the graphs of an export and keeps the feeds of `components` (arrays already in the spec's dtypes).

    Arrays the backend passes unchanged from call to call (a video's constant denoiser inputs) are stored once
    and shared by reference; tensors are copied, since their memory may be reused."""

    def __init__(self, engine_dir: str | Path, components: Iterable[str], threads: int = 0):
        super().__init__(engine_dir, "cpu", threads)
        self.feeds: dict[str, list[Feed]] = {c: [] for c in components}

    def run(self, name: str, feed: dict[str, np.ndarray | torch.Tensor], keep_dtype: bool = False
            ) -> list[np.ndarray]:
        if name in self.feeds:
            prec = self.manifest.components[name].precision
            self.feeds[name].append({
                t.name: (feed[t.name].detach().cpu().numpy().astype(t.numpy_dtype(prec)) if
                         isinstance(feed[t.name], torch.Tensor) else
                         np.ascontiguousarray(feed[t.name], dtype=t.numpy_dtype(prec)))
                for t in self.specs[name].inputs})
        return super().run(name, feed, keep_dtype)


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
