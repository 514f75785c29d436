"""Weights derived from a module's parameters (concatenated, composed) for the fused paths, built once and kept on
the module until one of its parameters changes (moved, cast, reloaded in place).

The entries live in the module's `__dict__`, outside `state_dict`, so checkpoints never see them.
"""
from __future__ import annotations

from typing import Callable, TypeVar

import torch
from torch import nn

T = TypeVar("T")
_ATTR = "_folded_weights"


def _stamp(module: nn.Module) -> tuple:
    """What identifies the current parameters: storage, in-place version, dtype and device of each."""
    return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in module.parameters())


def folded(module: nn.Module, key: str, build: Callable[[], T]) -> T:
    """`build()` (run without autograd), cached on `module` under `key` while its parameters stay the same."""
    cache = module.__dict__.setdefault(_ATTR, {})
    stamp = _stamp(module)
    entry = cache.get(key)
    if entry is None or entry[0] != stamp:
        with torch.no_grad():
            entry = cache[key] = (stamp, build())
    return entry[1]
