"""Settings for every test: float32 means float32 on a GPU too, and `cuda`-marked tests skip without a GPU.

TF32 (on by default for cuDNN convolutions, and for matmuls in some setups) would make an "fp32 reference" on a
GPU carry 10-bit mantissas, which is not the reference the tolerances are written against.
"""
from __future__ import annotations

import pytest
import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
