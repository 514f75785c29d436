"""Session-wide test settings (decided here because they must be in place before any test module is imported, so
the package is imported only inside fixtures) and the fixtures several modules share.

float32 means float32 on a GPU too: TF32 (on by default for cuDNN convolutions, and for matmuls in some setups)
would make an "fp32 reference" on a GPU carry 10-bit mantissas, which is not the reference the tolerances are
written against. `cuda`-marked tests skip without a GPU.

Triton either compiles or interprets, for the whole process, as TRITON_INTERPRET says when triton is first imported
(it decorates its own library then). Without a CUDA GPU the kernel tests run the kernels through the interpreter,
so the variable is set here, before anything imports triton, and removed when the session ends. Only code inside
`emo.kernels.registry.interpret_on_cpu()` runs kernels on CPU tensors, so other tests are unaffected; compiling
for a GPU needs a process of its own (tests/test_kernels_sm90.py starts one).

What several modules need and is slow or identical to make is made once per session here: the fp32 ONNX export of
the tiny preset's seeded random weights (and, where TensorRT can run, its plans), and the portrait + voice inputs
of a given length. Tests only read them; a test that adds files to its inputs takes a copy (`speech_media`'s
`into`).
"""
from __future__ import annotations

import io
import os
import shutil
from contextlib import redirect_stderr
from pathlib import Path
from typing import Callable

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


@pytest.fixture(scope="session")
def speech_media(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """(seconds, into=None) -> a directory with face.png (the demo portrait) and voice.wav (`seconds` of speech-like
    sound), made once per length; with `into`, a copy of it at into/media that the test may change."""
    from .media_factory import make_media

    made: dict[float, Path] = {}

    def media(seconds: float, into: Path | None = None) -> Path:
        if seconds not in made:
            made[seconds] = make_media(tmp_path_factory.mktemp(f"speech-{seconds}s"), seconds)
        return made[seconds] if into is None else Path(shutil.copytree(made[seconds], into / "media"))

    return media


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An fp32 ONNX export directory of `random_models()` (the tiny preset, seed 0, its own shape ranges)."""
    pytest.importorskip("onnx")
    from emo.checkpoints.model_dir import random_models
    from emo.export.exporter import export_models

    out = tmp_path_factory.mktemp("tiny-export") / "fp32"
    export_models(random_models(), out, "fp32")
    return out


@pytest.fixture(scope="session")
def tiny_plans(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TensorRT plans of `tiny_export`, built for this machine's GPU by emo-build-engine; skips (before exporting
    anything) where no TensorRT runtime can run."""
    from emo.cli.build_engine import main as build_main

    from .tensorrt_runtime import runnable_flavour

    flavour, cc = runnable_flavour()
    export = request.getfixturevalue("tiny_export")
    out = tmp_path_factory.mktemp("tiny-plans") / "plans"
    args = [str(export), "--out", str(out), "--flavour", flavour, "--quiet"]
    if flavour == "tensorrt-rtx":
        args += ["--target", f"sm_{cc}"]
    err = io.StringIO()
    with redirect_stderr(err):
        assert build_main(args) == 0, err.getvalue()
    return out
