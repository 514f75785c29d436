"""ONNX Runtime execution providers for a device string, and the check that a session really got the device.

ONNX Runtime starts a session on the CPU alone, with only a log line, when the CUDA provider cannot start (no GPU,
missing CUDA or cuDNN libraries); a render that was asked to run on a GPU must stop instead.
"""
from __future__ import annotations

import re

from ..manifest import EngineDirError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
Provider = str | tuple[str, dict]


def provider_list(device: str) -> list[Provider]:
    """cpu -> the CPU provider; cuda / cuda:N -> the CUDA provider on GPU N (device_id), with the CPU provider
    for the few ops CUDA lacks. No availability check (see `execution_providers`)."""
    m = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", device)
    if not m or (m.group(1) == "cpu" and m.group(2)):
        raise EngineDirError(f"the onnxruntime backend runs on cpu, cuda or cuda:N, not {device!r}")
    if m.group(1) == "cpu":
        return [CPU]
    return [(CUDA, {"device_id": int(m.group(2) or 0)}), CPU]


def execution_providers(device: str, available: list[str]) -> list[Provider]:
    """provider_list for `device` (auto: cuda:0 when this onnxruntime has the CUDA provider, else cpu), refused in
    one line when the CUDA provider is asked for and this onnxruntime lacks it."""
    if device == "auto":
        device = "cuda" if CUDA in available else "cpu"
    providers = provider_list(device)
    if _wants_cuda(providers) and CUDA not in available:
        raise EngineDirError(f"--device {device}: no CUDA GPU is available to onnxruntime (this onnxruntime has no "
                             f"CUDA execution provider: pip install onnxruntime-gpu)")
    return providers


def _wants_cuda(providers: list[Provider]) -> bool:
    return any((p[0] if isinstance(p, tuple) else p) == CUDA for p in providers)


def require_providers(session, providers: list[Provider], what: str) -> None:
    """Refuse a session that ONNX Runtime quietly started on the CPU although the CUDA provider was asked for."""
    if _wants_cuda(providers) and CUDA not in session.get_providers():
        device = next(p[1]["device_id"] for p in providers if isinstance(p, tuple) and p[0] == CUDA)
        raise EngineDirError(f"{what}: onnxruntime's CUDA provider could not start on cuda:{device} (no CUDA GPU "
                             f"available there, or its CUDA / cuDNN libraries are missing); not falling back to CPU")
