"""The two TensorRT flavours and what differs between them. The builder (`emo.engine`) and the runtime's tensorrt
backend take the flavour's module as a parameter; everything else (network, ONNX parser, optimisation profiles,
builder config, runtime, execution contexts) is the same API in both.

- "tensorrt": classic TensorRT 10/11 (`import tensorrt`), every NVIDIA GPU from Turing on, data-centre GPUs (A100,
  H100) included. Its builder times kernels on a GPU, so it builds on (and for) the GPU it runs on.
- "tensorrt-rtx": TensorRT for RTX (`import tensorrt_rtx_bindings`), RTX GPUs only. Its builder compiles ahead of
  time for a list of compute capabilities, without a GPU; sm_90 (H100) is not among them.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from ..errors import InputError


@dataclass(frozen=True)
class Flavour:
    name: str
    module: str  # the Python module
    install: str  # how to get it
    aot_targets: tuple[int, ...]  # compute capabilities its builder targets without that GPU; () = the build GPU only


FLAVOURS = {
    "tensorrt": Flavour("tensorrt", "tensorrt", "pip install tensorrt-cu12 (or tensorrt-cu13; a CUDA GPU machine)", ()),
    "tensorrt-rtx": Flavour("tensorrt-rtx", "tensorrt_rtx_bindings", "pip install 'emo-runtime[tensorrt-rtx]'",
                            (75, 80, 86, 89, 120, 121)),
}


def installed_flavours() -> list[str]:
    """Flavours whose module can be imported here, classic TensorRT first."""
    return [name for name, f in FLAVOURS.items() if importlib.util.find_spec(f.module) is not None]


def resolve_flavour(name: str = "auto") -> Flavour:
    """`auto`: the first installed flavour (classic TensorRT before TensorRT for RTX)."""
    if name == "auto":
        found = installed_flavours()
        if not found:
            raise InputError("no TensorRT is installed: " + "; or ".join(
                f"{f.name}: {f.install}" for f in FLAVOURS.values()))
        name = found[0]
    if name not in FLAVOURS:
        raise InputError(f"unknown TensorRT flavour {name!r} (choose from auto, {', '.join(FLAVOURS)})")
    return FLAVOURS[name]


def import_flavour(flavour: Flavour) -> ModuleType:
    try:
        return importlib.import_module(flavour.module)
    except ImportError as e:
        raise InputError(f"{flavour.name} is not installed ({e}): {flavour.install}") from None


def sm_name(capability: int) -> str:
    """75 -> "sm_75"."""
    return f"sm_{capability}"


def parse_sm(text: str) -> int:
    """"sm_89", "89" or "8.9" -> 89."""
    t = text.strip().lower().removeprefix("sm_").removeprefix("sm")
    major, dot, minor = t.partition(".")
    try:
        return int(major) * 10 + int(minor) if dot else int(t)
    except ValueError:
        raise InputError(f"not a compute capability: {text!r} (write sm_86, sm_89, ...)") from None


def collecting_logger(trt: ModuleType, errors: list[str], echo: bool = False):
    """A TensorRT logger that keeps error messages (for one-line reports) and drops the rest unless `echo`."""

    class Collecting(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg: str) -> None:
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                errors.append(msg)
            elif echo and severity == trt.ILogger.WARNING:
                print(f"TensorRT: {msg}")

    return Collecting()
