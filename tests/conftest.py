"""Session-wide test settings, decided here because they must be in place before any test module is imported.

Triton either compiles or interprets, for the whole process, as TRITON_INTERPRET says when triton is first imported
(it decorates its own library then). Without a CUDA GPU the kernel tests run the kernels through the interpreter,
so the variable is set here, before anything imports triton, and removed when the session ends. Only code inside
`emo.kernels.registry.interpret_on_cpu()` runs kernels on CPU tensors, so other tests are unaffected; compiling
for a GPU needs a process of its own (tests/test_kernels_sm90.py starts one).
"""
from __future__ import annotations

import os

import torch

_INTERPRET_SET_HERE = not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ
if _INTERPRET_SET_HERE:
    os.environ["TRITON_INTERPRET"] = "1"


def pytest_unconfigure(config):
    if _INTERPRET_SET_HERE:
        os.environ.pop("TRITON_INTERPRET", None)
