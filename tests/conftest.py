"""Session-wide test settings, decided here because they must be in place before any test module is imported.

float32 means float32 on a GPU too: TF32 (on by default for cuDNN convolutions, and for matmuls in some setups)
would make an "fp32 reference" on a GPU carry 10-bit mantissas, which is not the reference the tolerances are
written against. `cuda`-marked tests skip without a GPU.

Triton either compiles or interprets, for the whole process, as TRITON_INTERPRET says when triton is first imported
(it decorates its own library then). Without a CUDA GPU the kernel tests run the kernels through the interpreter,
so the variable is set here, before anything imports triton, and removed when the session ends. Only code inside
`emo.kernels.registry.interpret_on_cpu()` runs kernels on CPU tensors, so other tests are unaffected; compiling
for a GPU needs a process of its own (tests/test_kernels_sm90.py starts one).
"""
from __future__ import annotations

import os

import pytest
import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

_INTERPRET_SET_HERE = not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ
if _INTERPRET_SET_HERE:
    os.environ["TRITON_INTERPRET"] = "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _INTERPRET_SET_HERE:
        os.environ.pop("TRITON_INTERPRET", None)
