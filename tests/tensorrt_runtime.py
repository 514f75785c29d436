"""Where TensorRT plans can run: a CUDA GPU and an installed flavour whose plans that GPU runs."""
from __future__ import annotations

import pytest
import torch

from emo.tensorrt.flavours import FLAVOURS, installed_flavours


def runnable_flavour() -> tuple[str, int]:
    """(flavour name, compute capability) of this machine's GPU; skips the test where no TensorRT can run."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: no TensorRT runtime can run here")
    major, minor = torch.cuda.get_device_capability()
    cc = major * 10 + minor
    for name in installed_flavours():
        if name == "tensorrt" or cc in FLAVOURS[name].aot_targets:
            return name, cc
    pytest.skip(f"no installed TensorRT flavour runs on sm_{cc} (installed: {installed_flavours() or 'none'}; "
                f"TensorRT for RTX targets {FLAVOURS['tensorrt-rtx'].aot_targets})")
