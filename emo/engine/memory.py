"""Will a plan build fit in this machine's memory? An estimate before the build, and a one-line refusal when it
cannot fit.

The builder holds the graph's weights several times at its peak (the parser's copy, the network's, the compiled
plan and its serialized form), and its compiler needs memory per layer besides. Measured with TensorRT for RTX 1.7
on a 2-core CPU machine: 11.4 GiB peak RSS for the real-size fp16 denoiser (2.85 GiB of weights, 22k nodes),
1.7 GiB for the audio encoder (0.35 GiB, 1.8k nodes), 2.5 GiB for the tiny denoiser (no weights to speak of, 21k
nodes). A component whose estimate exceeds the budget (`--max-memory`, default: the memory available when the
build starts) is refused before any build starts.

The builder's workspace pool is not host memory on these builds: it bounds the device memory the engine may use
at its largest profile shapes (activations included), and a profile that needs more fails with "OutOfMemory"
whatever the machine's memory (docs/tensorrt.md); narrower profiles or a larger pool are the remedy.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

GIB = 1 << 30
WEIGHT_COPIES = 3.2  # graph weights held at the peak of a build
NODE_KIB = 90  # the compiler's memory per ONNX node
OVERHEAD_GIB = 0.5  # the builder process itself (Python, TensorRT's libraries, the ONNX parser)


def available_gib() -> float:
    """Memory available to a new process now (Linux: MemAvailable), else the physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GIB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    except (ValueError, OSError, AttributeError):
        return float("inf")


@dataclass(frozen=True)
class MemoryPlan:
    weights_gib: float  # the graph and its data file
    need_gib: float  # estimated peak RSS of the build
    budget_gib: float

    def to_dict(self) -> dict:
        return {k: round(v, 2) for k, v in vars(self).items()}


def plan_memory(component: str, graph_bytes: int, nodes: int, budget_gib: float) -> MemoryPlan:
    """The estimated peak of one build of a graph of `graph_bytes` (with its data file) and `nodes` ONNX nodes;
    InputError when it cannot fit in `budget_gib`."""
    weights = graph_bytes / GIB
    need = OVERHEAD_GIB + nodes * NODE_KIB / (1 << 20) + WEIGHT_COPIES * weights
    if need > budget_gib:
        raise InputError(f"{component}: building needs about {need:.1f} GiB of memory ({weights:.1f} GiB of weights, "
                         f"{nodes} nodes), and {budget_gib:.1f} GiB is available; build from an fp16 export "
                         f"(emo-export --from-export, half the weights) or on a machine with more memory")
    return MemoryPlan(weights, need, budget_gib)

