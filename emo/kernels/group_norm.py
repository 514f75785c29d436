"""GroupNorm (+ SiLU) in one pass over memory: statistics in float32, normalise, affine, activation.

Used by every ResNet block of both UNets (norm -> SiLU -> conv), the most frequent memory-bound op after the
attention layers. The kernel reads x through its strides, so channels_last activations and channel or batch slices
need no copy; the output has x's memory format.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import registry
from .launch import Launch, Tiles, pow2_block, strides

# (dtype, channels per group) -> Tiles(BLOCK_C = channels per group padded, BLOCK_S positions, warps): 4096
# elements a step over 8 warps. Rows: SD1.5's 320..2560 channels in 32 groups (10..80 a group); no spills on
# sm_90 (`python -m emo.kernels.aot`).
TILES: dict[tuple[torch.dtype, int], Tiles] = {
    (dtype, cpg): Tiles(pow2_block(cpg, 1), 4096 // pow2_block(cpg, 1), warps=8)
    for dtype in (torch.float16, torch.bfloat16) for cpg in (10, 20, 30, 40, 60, 80)
}


def tiles(dtype: torch.dtype, channels_per_group: int, positions: int, groups: int) -> tuple[Tiles, int]:
    """(the table's entry, or a rule for other sizes and dtypes, no wider than the positions need; BLOCK_G): small
    groups share a program, so that a step still covers the table's number of elements."""
    block_c = pow2_block(channels_per_group, 1)
    t = TILES.get((dtype, channels_per_group), Tiles(block_c, max(16, 2048 // block_c), warps=4))
    block_s = min(t.block_n, pow2_block(positions, 16))
    block_g = min(pow2_block(groups, 1), max(1, t.block_m * t.block_n // (block_c * block_s)))
    return Tiles(block_c, block_s, t.warps, t.stages), block_g


def group_norm_silu_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                              silu: bool = True) -> torch.Tensor:
    y = F.group_norm(x, groups, weight, bias, eps)
    return F.silu(y) if silu else y


def _positions(x: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (N, C, S): a view when the spatial dims merge into one stride (contiguous,
    channels_last, channel or batch slices); a spatially cropped view is copied once."""
    try:
        return x.view(*x.shape[:2], -1)
    except RuntimeError:
        return x.reshape(*x.shape[:2], -1)


def _output(x3: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The output for x3 = _positions(x): x's memory format (e.g. channels_last stays channels_last)."""
    return torch.empty_like(x3).view(shape)  # n c s -> n c *spatial, always a view


def group_norm_launch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                      silu: bool) -> tuple[Launch, torch.Tensor]:
    """The kernel launch for GroupNorm(+SiLU)(x), and the output it writes."""
    n, c = x.shape[:2]
    x3 = _positions(x)
    y = _output(x3, x.shape)
    y3 = y.view(x3.shape)  # n c *spatial -> n c s
    t, block_g = tiles(x.dtype, c // groups, x3.shape[2], groups)
    launch = Launch("emo.kernels.group_norm_triton", "group_norm_kernel", (n, math.ceil(groups / block_g)),
                    (x3, y3, weight, bias, c, x3.shape[2], groups, eps, *strides(x3, y3, weight, bias)),
                    dict(BLOCK_G=block_g, BLOCK_C=t.block_m, BLOCK_S=t.block_n, SILU=silu), t.warps, t.stages)
    return launch, y


@torch.library.custom_op("emo::group_norm_silu", mutates_args=())
def group_norm_silu_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                       silu: bool) -> torch.Tensor:
    launch, y = group_norm_launch(x, weight, bias, groups, eps, silu)
    launch.run()
    return y


@group_norm_silu_op.register_fake
def _(x, weight, bias, groups, eps, silu):
    return _output(_positions(x), x.shape)


def group_norm_silu(x: torch.Tensor, norm: torch.nn.GroupNorm, silu: bool = True) -> torch.Tensor:
    """SiLU(GroupNorm(x)) (or just the norm): the fused kernel when active, else the reference ops."""
    return registry.dispatch("group_norm_silu", group_norm_silu_op, group_norm_silu_reference,
                             x, norm.weight, norm.bias, norm.num_groups, norm.eps, silu)
