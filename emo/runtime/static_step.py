"""Static buffers for a replayed guided step, keyed by shape: what torch-fast and tensorrt share.

A CUDA graph reads its inputs from the addresses it was captured with, so every step of a shape runs on one set
of buffers: the video's conditioning is copied in when another video comes, the clip's when another clip comes,
the step inputs (sample, timestep, guidance and motion scale) before every replay. The key is the shape only,
never a value, so another guidance or motion scale captures nothing new. The cache holds `max_graphs` shapes,
least recently used out first.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..sampling.conditioning import ClipConditioning, StepInputs


def _copy_into(static: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> None:
    for name, dst in static.items():
        dst.copy_(new[name])


def shape_key(clip: ClipConditioning, inputs: StepInputs) -> tuple:
    """What a captured step depends on: the sample's shape and dtype (frames, latent size) and the number of
    motion frames; every other input's shape follows from these."""
    return tuple(inputs.sample.shape), inputs.sample.dtype, clip.motion_features.shape[1]


@dataclass
class StaticStep:
    """The static buffers of the guided step for one shape, and what its backend captured over them."""

    clip: ClipConditioning
    inputs: StepInputs
    graph: "torch.cuda.CUDAGraph | None" = None
    out: torch.Tensor | None = None  # the captured step's output buffer
    resources: tuple = ()  # what the graph uses besides the buffers (TensorRT: its execution context, scratch)
    bound: dict[str, "weakref.ref | None"] = field(default_factory=lambda: {"video": None, "clip": None})

    @classmethod
    def cloned(cls, clip: ClipConditioning, inputs: StepInputs) -> "StaticStep":
        """Contiguous copies of `clip` and `inputs` (and bound to them)."""
        def copy(feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: t.clone(memory_format=torch.contiguous_format) for k, t in feed.items()}

        levels, layers = len(clip.video.masks), len(clip.video.ref_kv)
        static = ClipConditioning.from_feed(copy(clip.feed()), levels, layers)
        return cls(static, StepInputs(**copy(inputs.feed())),
                   bound={"video": weakref.ref(clip.video), "clip": weakref.ref(clip)})

    def feed(self) -> dict[str, torch.Tensor]:
        """Every buffer by the denoiser IO spec's name."""
        return self.clip.feed() | self.inputs.feed()

    def bind(self, clip: ClipConditioning, inputs: StepInputs) -> None:
        """Copy in what changed since the last call: the video's conditioning when another video comes, the clip's
        when another clip comes, the step inputs always."""
        video = self.clip.video.feed()
        if self.bound["video"] is None or self.bound["video"]() is not clip.video:
            _copy_into(video, clip.video.feed())
            self.bound["video"] = weakref.ref(clip.video)
        if self.bound["clip"] is None or self.bound["clip"]() is not clip:
            _copy_into({k: t for k, t in self.clip.feed().items() if k not in video}, clip.feed())
            self.bound["clip"] = weakref.ref(clip)
        _copy_into(self.inputs.feed(), inputs.feed())


class StepCache:
    """Static steps by shape, at most `max_graphs` of them (each holds its buffers and, on a GPU, its graph)."""

    def __init__(self, max_graphs: int):
        if max_graphs < 1:
            raise ValueError("max_graphs must be >= 1")
        self.max_graphs = max_graphs
        self.captures = 0  # static steps built: one per new shape, none per setting
        self.steps: OrderedDict[tuple, StaticStep] = OrderedDict()  # least recently used first

    def get(self, clip: ClipConditioning, inputs: StepInputs, capture: Callable[[StaticStep], None]
            ) -> StaticStep:
        """The static step of this shape holding these inputs; a new shape's buffers are cloned from them and
        handed to `capture` (which records the backend's graph over them)."""
        key = shape_key(clip, inputs)
        static = self.steps.get(key)
        if static is not None:
            self.steps.move_to_end(key)
            static.bind(clip, inputs)
            return static
        while len(self.steps) >= self.max_graphs:
            self.steps.popitem(last=False)  # the least recently used shape
        static = StaticStep.cloned(clip, inputs)
        capture(static)
        self.steps[key] = static
        self.captures += 1
        return static
