"""Which fused kernels are switched on. Every kernel has a plain-torch fallback with the same signature; the
eager (reference) backend never enables any, so its numbers stay those of the golden tests.

Enable from code (`enable("group_norm_silu")`, `enable_all()`) or with EMO_KERNELS=all | none | name,name.
A kernel only runs where it can: CUDA tensors with Triton present, or any tensor under TRITON_INTERPRET=1.
"""
from __future__ import annotations

import importlib.util
import os
import threading
from contextlib import contextmanager
from typing import Iterator

KERNELS = ("group_norm_silu", "two_source_attention", "temporal_attention", "audio_attention")
_enabled: set[str] = set()
_local = threading.local()  # per-thread override set by `using`


def _from_env() -> None:
    value = os.environ.get("EMO_KERNELS", "none").strip()
    names = set(KERNELS) if value == "all" else {n for n in value.split(",") if n and n != "none"}
    unknown = names - set(KERNELS)
    if unknown:
        raise ValueError(f"EMO_KERNELS names unknown kernel(s) {', '.join(sorted(unknown))}; known: {', '.join(KERNELS)}")
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


def pow2_block(n: int, minimum: int) -> int:
    """The smallest power of two >= n and >= minimum: a Triton block covering n (e.g. head dims 40/80/160)."""
    return max(minimum, 1 << (n - 1).bit_length())


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def active(name: str, *tensors) -> bool:
    """Run kernel `name` on these tensors? Only if enabled and runnable where the tensors live."""
    if name not in enabled() or not triton_available():
        return False
    return interpreting() or all(t.is_cuda for t in tensors)


_from_env()
