"""One Triton launch as data: which kernel, grid, arguments, compile-time constants, warps and stages.

Each fused op builds its `Launch` from the tensors it is given (every operand's strides included, no copies) and
runs it; the ahead-of-time compiler (`aot`) builds the same `Launch` on meta tensors of the real model sizes and
compiles it for a GPU that is not there. Tile sizes come from one `Tiles` table per kernel.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Tiles:
    """Block sizes and launch shape of one kernel configuration (rows x keys, warps, software-pipeline stages)."""

    block_m: int
    block_n: int
    warps: int = 4
    stages: int = 2


@dataclass(frozen=True)
class Launch:
    module: str  # the module that defines the Triton kernel, imported only when it runs or compiles
    kernel: str
    grid: tuple[int, ...]
    args: tuple[Any, ...]  # in the kernel's parameter order, before the constexpr parameters
    constants: dict[str, Any] = field(default_factory=dict)  # the constexpr parameters
    warps: int = 4
    stages: int = 2

    def function(self):
        """The Triton kernel (its module is imported on first use: Triton is optional)."""
        return getattr(importlib.import_module(self.module), self.kernel)

    def run(self) -> None:
        """Launch on the arguments' device: compiled for CUDA tensors; on CPU tensors Triton's interpreter, which
        needs TRITON_INTERPRET=1 in the environment before triton is first imported (Triton decorates every
        function, its own library's included, for one mode per process)."""
        self.function()[self.grid](*self.args, **self.constants, num_warps=self.warps, num_stages=self.stages)


def pow2_block(n: int, minimum: int) -> int:
    """The smallest power of two >= n and >= minimum: a Triton block covering n (e.g. head dims 40/80/160)."""
    return max(minimum, 1 << (n - 1).bit_length())


def strides(*tensors: torch.Tensor) -> tuple[int, ...]:
    """Every stride of every tensor, in order: the kernels index each operand through its own strides."""
    return tuple(s for t in tensors for s in t.stride())
