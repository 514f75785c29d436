"""TensorRT backend: runs the plans of a TensorRT plan directory (made by emo-build-engine) on a CUDA GPU (classic
TensorRT or TensorRT for RTX, whichever built them), through the shared graph backend (`graph_backend`).

Everything that needs no GPU is checked first (`emo.tensorrt.plan_dir`: manifest, flavour and version, plan hashes
and validity, the binding plan against the IO spec); then the GPU's compute capability against the plans'
targets. Each component gets one deserialized engine (`tensorrt_runner`), run on the current torch stream.

Per video, the reference K/V entries are computed once and kept, like the rest of the conditioning, in the
denoiser's binding dtypes. Per step, the denoiser runs over static buffers (`static_step`), one set per input
shape with its own execution context bound to them for good: the first step of a shape enqueues once (TensorRT
finishes its lazy initialisation; TensorRT for RTX, asked to specialise eagerly, compiles the shape's own
kernels), then that enqueue is captured in a CUDA graph and every later step replays it. A context TensorRT says
cannot be captured (`is_stream_capturable`, TensorRT for RTX) is enqueued each step instead.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..manifest import EngineDirError
from ..sampling.conditioning import ClipConditioning, StepInputs
from ..tensorrt.flavours import collecting_logger
from ..tensorrt.plan_dir import check_target, open_plan_dir
from .graph_backend import GraphBackend
from .static_step import BoundStep, StaticStep, StepCache
from .tensorrt_runner import EngineRunner, Scratch


class TensorRTBackend(GraphBackend):
    name = "tensorrt"

    def __init__(self, plan_dir: str | Path, device: str = "cuda", cuda_graphs: bool = True, max_graphs: int = 2):
        self.plan_dir, self.trt = open_plan_dir(plan_dir)
        super().__init__(self.plan_dir.directory, self.plan_dir.manifest)
        if not torch.cuda.is_available():
            raise EngineDirError("the tensorrt backend needs a CUDA GPU (none is visible here)")
        self.device = torch.device("cuda" if device in ("auto", "cuda") else device)
        if self.device.type != "cuda":
            raise EngineDirError(f"the tensorrt backend runs on a CUDA GPU, not {device!r}")
        major, minor = torch.cuda.get_device_capability(self.device)
        check_target(self.manifest, self.directory, major * 10 + minor, torch.cuda.get_device_name(self.device))
        self.errors: list[str] = []
        self._logger = collecting_logger(self.trt, self.errors)
        self._runtime = self.trt.Runtime(self._logger)
        scratch = Scratch(self.device)
        with torch.cuda.device(self.device):
            self.runners = {name: EngineRunner(self.trt, self._runtime, self.directory / entry.file, self.specs[name],
                                               self.plan_dir.plans[name], self.device, self.errors, scratch)
                            for name, entry in self.manifest.components.items()}
        self.dtype = self.runners["denoiser"].dtype("sample")
        self.cuda_graphs = cuda_graphs
        self.step_cache = StepCache(max_graphs, self.device, cuda_graphs)  # static steps by shape, with contexts

    @property
    def captures(self) -> int:
        """Static steps built: one per new shape."""
        return self.step_cache.captures

    def input_dtype(self, component: str, name: str) -> torch.dtype:
        return self.runners[component].dtype(name)

    def call(self, component: str, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.runners[component].run(feed)

    def _bind(self, static: StaticStep) -> BoundStep:
        """An execution context bound to this shape's static buffers for good; its first enqueue (the warm-up)
        finishes TensorRT's lazy initialisation, and TensorRT for RTX, asked to specialise eagerly, compiles the
        shape's own kernels there, so the capture records those."""
        context = self.runners["denoiser"].new_context(specialise_eagerly=True)
        out = context.bind(static.feed(), torch.cuda.current_stream(self.device))["noise_pred"]

        def run() -> torch.Tensor:
            context.enqueue(torch.cuda.current_stream(self.device))
            return out

        return BoundStep(run, context.capturable)

    @torch.no_grad()
    def _guided_step(self, clip: ClipConditioning, inputs: StepInputs) -> torch.Tensor:
        return self.step_cache.run(clip, inputs, self._bind)
