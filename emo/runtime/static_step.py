"""The guided step captured over static buffers, keyed by shape: what torch-fast and tensorrt share.

A CUDA graph reads its inputs from the addresses it was captured with, so every step of a shape runs on one set
of buffers: the video's conditioning is copied in when another video comes, the clip's when another clip comes,
the step inputs (sample, timestep, guidance and motion scale) before every replay. The key is the shape only,
never a value, so another guidance or motion scale captures nothing new. The cache holds `max_graphs` shapes,
least recently used out first.

A backend binds its step to a new shape's buffers (`BoundStep`: torch-fast runs the model on them, tensorrt binds
an execution context to their addresses); the cache warms that step up on a side stream, captures it in a CUDA
graph where the backend says it can be, and replays the graph for every later step of the shape. Without CUDA
graphs the bound step simply runs each time, so the bookkeeping is the same on any machine.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..sampling.conditioning import ClipConditioning, StepInputs


def _always(stream: "torch.cuda.Stream") -> bool:
    return True


@dataclass(frozen=True)
class BoundStep:
    """A backend's guided step bound to one shape's static buffers."""

    run: Callable[[], torch.Tensor]  # the step once, on the current stream -> its output (a buffer it may reuse)
    capturable: Callable[["torch.cuda.Stream"], bool] = _always  # whether a CUDA graph may capture it on a stream


def _copy_into(static: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> None:
    for name, dst in static.items():
        dst.copy_(new[name])


def shape_key(clip: ClipConditioning, inputs: StepInputs) -> tuple:
    """What a captured step depends on: the sample's shape and dtype (CFG halves, frames, latent size) and the
    number of motion frames; every other input's shape follows from these."""
    return tuple(inputs.sample.shape), inputs.sample.dtype, clip.motion_features.shape[1]


@dataclass
class StaticStep:
    """The static buffers of the guided step for one shape, the backend's step bound to them and its graph."""

    clip: ClipConditioning
    inputs: StepInputs
    step: BoundStep | None = None
    graph: "torch.cuda.CUDAGraph | None" = None
    out: torch.Tensor | None = None  # the captured step's output buffer
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
            _copy_into(self.clip.own_feed(), clip.own_feed())
            self.bound["clip"] = weakref.ref(clip)
        _copy_into(self.inputs.feed(), inputs.feed())


class StepCache:
    """Static steps by shape, at most `max_graphs` of them (each holds its buffers, bound step and graph).

    cuda_graphs: capture each shape's step (on `device`) after `warmups` runs, all graphs' activations in one
    memory pool; otherwise every step runs the bound step."""

    def __init__(self, max_graphs: int, device: torch.device, cuda_graphs: bool, warmups: int = 1):
        if max_graphs < 1:
            raise ValueError("max_graphs must be >= 1")
        self.max_graphs, self.device, self.cuda_graphs, self.warmups = max_graphs, device, cuda_graphs, warmups
        self.pool = torch.cuda.graph_pool_handle() if cuda_graphs else None
        self.captures = 0  # static steps built: one per new shape, none per setting
        self.steps: OrderedDict[tuple, StaticStep] = OrderedDict()  # least recently used first

    def run(self, clip: ClipConditioning, inputs: StepInputs, bind: Callable[[StaticStep], BoundStep],
            variant: tuple = ()) -> torch.Tensor:
        """One step on the static buffers of its shape, holding these inputs -> a copy of its output (the next step
        overwrites the buffer). A new shape's buffers are cloned from the inputs and handed to `bind`. variant:
        what else tells bound steps of one shape apart (a step plan's cache mode)."""
        static = self._get(clip, inputs, bind, variant)
        if static.graph is None:
            return static.step.run().clone()
        static.graph.replay()
        return static.out.clone()

    def _get(self, clip: ClipConditioning, inputs: StepInputs, bind: Callable[[StaticStep], BoundStep],
             variant: tuple) -> StaticStep:
        key = (*shape_key(clip, inputs), *variant)
        static = self.steps.get(key)
        if static is not None:
            self.steps.move_to_end(key)
            static.bind(clip, inputs)
            return static
        while len(self.steps) >= self.max_graphs:
            self.steps.popitem(last=False)  # the least recently used shape
        static = StaticStep.cloned(clip, inputs)
        static.step = bind(static)
        if self.cuda_graphs:
            self._capture(static)
        self.steps[key] = static
        self.captures += 1
        return static

    def _capture(self, static: StaticStep) -> None:
        """Warm-up runs on a side stream (kernel autotuning, lazy initialisation, allocator state), then one run
        captured on it, when the bound step says it can be; replays go to the current stream."""
        main, side = torch.cuda.current_stream(self.device), torch.cuda.Stream(self.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            for _ in range(self.warmups):
                static.step.run()
        main.wait_stream(side)
        if not static.step.capturable(side):
            return
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=side):
            static.out = static.step.run()
        static.graph = graph
