"""Every kernel compiled ahead of time for sm_90 (H100) at the real hallo-sd15 sizes, float16 and bfloat16 (and
float32 for the kernels that multiply matrices), with Triton's bundled ptxas: no register spills, shared memory
within one block's limit, wgmma for the half-precision dot products, float32 dots never rounded to TF32. Nothing
runs on a GPU: this checks code generation only.

The compiles run in a child process: this test session may run Triton in interpreter mode (tests/conftest.py),
and Triton picks interpreting or compiling once per process. Compiled kernels are cached by Triton on disk, so a
second session is quick; the child runs once per session.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)

DOT_KERNELS = {"two_source_attention", "audio_attention"}  # the kernels that multiply matrices
ALL_KERNELS = DOT_KERNELS | {"temporal_attention", "group_norm"}

_CHILD = """
import json, sys, torch
from emo.kernels import aot
launches = aot.sd15_launches((torch.float16, torch.bfloat16))
launches += [(shape, launch) for shape, launch in aot.sd15_launches((torch.float32,))
             if launch.module.endswith(("two_source_attention_triton", "audio_attention_triton"))]
json.dump([report.row() for report in aot.compile_all(launches)], sys.stdout)
"""


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _half(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["dtype"] in ("fp16", "bf16")]


def test_every_kernel_compiles_for_both_half_dtypes_at_every_real_head_dim(rows):
    half = _half(rows)
    assert {r["kernel"] for r in half} == ALL_KERNELS
    for kernel in DOT_KERNELS | {"temporal_attention"}:
        for dtype in ("fp16", "bf16"):
            shapes = {r["shape"].split(",")[0] for r in half if r["kernel"] == kernel and r["dtype"] == dtype}
            assert shapes == {"head dim 40", "head dim 80", "head dim 160"}, (kernel, dtype, shapes)


def test_no_register_spills_and_shared_memory_fits(rows):
    from emo.kernels.aot import SM90_SHARED_BYTES

    spilled = [r for r in rows if r["spill_bytes"] or r["stack_bytes"]]
    assert not spilled, spilled
    too_big = [r for r in rows if r["shared_bytes"] > SM90_SHARED_BYTES]
    assert not too_big, too_big


def test_dot_products_are_wgmma_and_not_serialized(rows):
    for r in _half(rows):
        if r["kernel"] in DOT_KERNELS:
            assert r["wgmma"] and not r["wgmma_serialized"], r
        assert not r["tf32"], r


def test_float32_dot_products_stay_ieee(rows):
    """The precision policy in the generated code: float32 operands never go to the TF32 tensor cores."""
    fp32 = [r for r in rows if r["dtype"] == "fp32"]
    assert {r["kernel"] for r in fp32} == DOT_KERNELS and len(fp32) == 6
    assert not any(r["tf32"] or r["wgmma"] for r in fp32), fp32


def test_launch_specialisation_matches_tritons_jit():
    """The ahead-of-time signature treats arguments as Triton's JIT does at run time (ints equal to 1 become
    constants, multiples of 16 and aligned pointers get a divisibility hint), so the compiled code is the code
    that would run."""
    import torch

    native = pytest.importorskip("triton._C.libtriton").native_specialize_impl
    from triton.backends.compiler import BaseBackend

    from emo.kernels.aot import _specialize

    tensor = torch.zeros(64, dtype=torch.float16)
    for value in (1, 16, 40, 7, 2 ** 33, tensor, tensor[8:], tensor[3:]):
        kind, constant, divisible = _specialize(value)
        want_kind, want_key = native(BaseBackend, value, False, True, True)
        assert kind == want_kind, value
        assert divisible == (want_key == "D") or kind == "constexpr", value
