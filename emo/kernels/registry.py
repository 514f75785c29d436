"""Which fused kernels are switched on, and the one place that chooses between a kernel and its fallback.

Every kernel has a plain-torch fallback with the same signature; the eager (reference) backend never enables any,
so its numbers stay those of the golden tests. Enable from code (`enable("group_norm_silu")`, `enable_all()`) or
with EMO_KERNELS=all | none | name,name.

A kernel only runs where it can: enabled, Triton present, operands within the precision policy (`precision`), and
CUDA tensors, or CPU tensors inside `interpret_on_cpu()` (tests: Triton's interpreter, slow). A kernel that fails
to compile or run is switched off for the rest of the process with one warning that names it and the error, and
its fallback computes the result.
"""
from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import torch

from . import precision

T = TypeVar("T")

KERNELS = ("group_norm_silu", "two_source_attention", "temporal_attention", "audio_attention")
_enabled: set[str] = set()
_local = threading.local()  # per-thread overrides set by `using` and `interpret_on_cpu`
_failed: dict[str, str] = {}  # kernel -> the error that switched it off


def _from_env() -> None:
    value = os.environ.get("EMO_KERNELS", "none").strip()
    names = set(KERNELS) if value == "all" else {n for n in value.split(",") if n and n != "none"}
    unknown = names - set(KERNELS)
    if unknown:
        raise ValueError(f"EMO_KERNELS names unknown kernel(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(KERNELS)}")
    _enabled.update(names)


def enable(*names: str) -> None:
    unknown = set(names) - set(KERNELS)
    if unknown:
        raise ValueError(f"unknown kernel(s) {', '.join(sorted(unknown))}; known: {', '.join(KERNELS)}")
    _enabled.update(names)


def enable_all() -> None:
    _enabled.update(KERNELS)


def disable(*names: str) -> None:
    _enabled.difference_update(names or KERNELS)


def enabled() -> frozenset[str]:
    override = getattr(_local, "names", None)
    return frozenset(_enabled if override is None else override)


@contextmanager
def using(names: frozenset[str] | set[str] | tuple[str, ...]) -> Iterator[None]:
    """Exactly these kernels, in this thread, for the duration (the fast backend's calls; the exporter uses
    `using(())` so graphs never contain custom ops)."""
    previous = getattr(_local, "names", None)
    _local.names = frozenset(names)
    try:
        yield
    finally:
        _local.names = previous


@contextmanager
def interpret_on_cpu() -> Iterator[None]:
    """Run active kernels on CPU tensors through Triton's interpreter, in this thread, for the duration (tests).
    Triton interprets or compiles for the whole process, as TRITON_INTERPRET said when triton was first imported
    (it decorates its own library then), so the variable must be set before that."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("Triton's interpreter needs TRITON_INTERPRET=1 in the environment before triton is imported")
    previous = getattr(_local, "interpret", False)
    _local.interpret = True
    try:
        yield
    finally:
        _local.interpret = previous


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    return getattr(_local, "interpret", False)


def failures() -> dict[str, str]:
    """Kernels switched off by a failed launch, with the error of each."""
    return dict(_failed)


def active(name: str, *tensors: torch.Tensor) -> bool:
    """Run kernel `name` on these tensors? Only if enabled, not failed, within the precision policy and runnable
    where the tensors live."""
    if name not in enabled() or name in _failed or not triton_available() or not precision.supported(*tensors):
        return False
    if all(t.is_cuda for t in tensors):
        return True
    return interpreting() and not any(t.is_cuda for t in tensors)


def dispatch(name: str, kernel: Callable[..., T], fallback: Callable[..., T], *args) -> T:
    """`kernel(*args)` when kernel `name` is active on the tensors among `args`, else `fallback(*args)`. A kernel
    that raises (compile error, out of resources, launch failure) warns once and is not tried again: the fast
    path degrades to plain torch instead of stopping a render."""
    if active(name, *(a for a in args if isinstance(a, torch.Tensor))):
        try:
            return kernel(*args)
        except Exception as error:  # noqa: BLE001 - any failure of the kernel means: use the fallback
            first_line = next(iter(str(error).strip().splitlines()), "")
            _failed[name] = f"{type(error).__name__}: {first_line}"
            warnings.warn(f"kernel {name} failed and is switched off, using its plain-torch fallback: {_failed[name]}",
                          RuntimeWarning, stacklevel=3)
    return fallback(*args)


_from_env()
