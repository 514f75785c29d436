"""torch-fast's step through torch.compile (inductor), with inductor's on-disk cache kept between processes.

Each static step (one per shape and step plan, see static_step.StepCache) gets its own compiled function, so the
compiled code is keyed exactly as the static buffers are. Two modes, because both cannot capture the same step:
  - "graph": inductor's kernels run inside torch-fast's own CUDA graph capture (one graph per shape and plan);
  - "reduce-overhead": inductor's CUDA graphs (cudagraph trees) replace torch-fast's capture.
On the CPU both compile with inductor's C++ backend and run without any graph. Neither mode's GPU speed has
been measured yet.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, TypeVar

COMPILE_MODES = ("graph", "reduce-overhead")
CACHE_ENV = "EMO_INDUCTOR_CACHE"  # overrides where inductor's cache lives
COMPILER = "inductor"  # torch.compile's backend; tests trace the whole step with "aot_eager" (no code generation)
RECOMPILE_LIMIT = 64  # compiled variants of one step function: shapes x plans x warm-ups, well above the cache's
T = TypeVar("T")


def inductor_cache_dir() -> Path:
    """$EMO_INDUCTOR_CACHE, else $XDG_CACHE_HOME/emo-runtime/inductor (~/.cache when XDG_CACHE_HOME is unset)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "emo-runtime" / "inductor"


def use_inductor_cache() -> Path:
    """Point inductor's cache (compiled kernels, FX graph cache) at inductor_cache_dir(), unless the user already
    set TORCHINDUCTOR_CACHE_DIR: a second process then loads what the first compiled instead of compiling."""
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or current == _inductor_default():  # inductor writes its default there on first use
        current = os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(inductor_cache_dir())
    path = Path(current)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _inductor_default() -> str:
    """The directory inductor picks (and writes into TORCHINDUCTOR_CACHE_DIR) when nobody set one."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # older torch: the same rule
        import getpass
        import tempfile

        return os.path.join(tempfile.gettempdir(), "torchinductor_" + getpass.getuser())
    return default_cache_dir()


def check_mode(mode: str | None) -> None:
    if mode is not None and mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r} (choose {', '.join(COMPILE_MODES)})")


def compile_step(fn: Callable[..., T], mode: str) -> Callable[..., T]:
    """`fn` compiled by inductor for static shapes (one compiled variant per shape it sees)."""
    import torch
    import torch._dynamo

    check_mode(mode)
    use_inductor_cache()
    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    setattr(torch._dynamo.config, limit, max(getattr(torch._dynamo.config, limit), RECOMPILE_LIMIT))
    return torch.compile(fn, backend=COMPILER, dynamic=False,
                         mode="reduce-overhead" if mode == "reduce-overhead" else None)
