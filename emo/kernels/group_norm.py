"""GroupNorm (+ SiLU) in one pass over memory: statistics in float32, normalise, affine, activation.

Used by every ResNet block of both UNets (norm -> SiLU -> conv), the most frequent memory-bound op after the
attention layers.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from . import registry


def group_norm_silu_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                              silu: bool = True) -> torch.Tensor:
    y = F.group_norm(x, groups, weight, bias, eps)
    return F.silu(y) if silu else y


@functools.cache
def _kernel():
    from .group_norm_triton import group_norm_kernel  # Triton is optional: imported on first use

    return group_norm_kernel


@torch.library.custom_op("emo::group_norm_silu", mutates_args=())
def group_norm_silu_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                       silu: bool) -> torch.Tensor:
    x = x.contiguous()
    y = torch.empty_like(x)
    n, c = x.shape[:2]
    hw = x[0, 0].numel()
    _kernel()[(n * groups,)](x, y, weight.contiguous(), bias.contiguous(), c, hw, groups, eps, BLOCK=1024,
                             SILU=silu)
    return y


@group_norm_silu_op.register_fake
def _(x, weight, bias, groups, eps, silu):
    return torch.empty_like(x)


def group_norm_silu(x: torch.Tensor, norm: torch.nn.GroupNorm, silu: bool = True) -> torch.Tensor:
    """SiLU(GroupNorm(x)) (or just the norm): the fused kernel when active, else the reference ops."""
    if registry.active("group_norm_silu", x):
        return group_norm_silu_op(x, norm.weight, norm.bias, norm.num_groups, norm.eps, silu)
    return group_norm_silu_reference(x, norm.weight, norm.bias, norm.num_groups, norm.eps, silu)
