"""Compile kernel launches ahead of time for a GPU that is not here (sm_90, the H100), with Triton's bundled
ptxas, and read back what matters for speed: registers a thread, bytes spilled to local memory, whether the dot
products became Hopper's wgmma, and whether ptxas had to serialize them for lack of registers.

The launches are the ones the ops build (`*_launch`), on meta tensors of the real model sizes, so the compiled
code is specialised the way Triton's JIT would specialise it at run time (`_specialize`). No GPU is touched and
nothing runs: this measures code generation, not speed. It needs a process where Triton compiles (not one that
imported triton under TRITON_INTERPRET=1).

    python -m emo.kernels.aot [--json PATH]      # the table for every kernel at SD1.5 sizes, fp16, bf16, fp32
"""
from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .launch import Launch

SM90 = 90
SM90_SHARED_BYTES = 227 * 1024  # the most shared memory one block may use on an H100
TRITON_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int64: "i64"}


@dataclass(frozen=True)
class CompileReport:
    kernel: str  # the op (its module's name)
    dtype: str
    shape: str  # what the row stands for, e.g. "head dim 40"
    tiles: str  # the launch's block sizes
    warps: int
    stages: int
    registers: int  # a thread
    spill_bytes: int  # spill stores + spill loads
    stack_bytes: int
    shared_bytes: int
    wgmma: bool  # Hopper warpgroup MMA instructions in the code
    wgmma_serialized: bool  # ptxas could not overlap them (too few registers)
    tf32: bool  # float32 operands rounded to TF32 anywhere (the precision policy forbids it)

    def row(self) -> dict[str, Any]:
        return asdict(self)


def _specialize(value: Any) -> tuple[str, Any, bool]:
    """(signature type, constant or None, 16-divisible) as Triton's JIT specialises an argument: integers equal to
    1 become constants, multiples of 16 and 16-byte-aligned pointers get a divisibility hint (PyTorch allocations
    are aligned; a view's offset decides)."""
    if isinstance(value, torch.Tensor):
        return "*" + TRITON_DTYPES[value.dtype], None, value.storage_offset() * value.element_size() % 16 == 0
    if isinstance(value, bool):
        return "i1", None, False
    if isinstance(value, int):
        if value == 1:
            return "constexpr", 1, False
        return ("i32" if -2 ** 31 <= value < 2 ** 31 else "i64"), None, value % 16 == 0
    if isinstance(value, float):
        return "fp32", None, False
    raise TypeError(f"cannot specialise a kernel argument of type {type(value).__name__}")


def _source(launch: Launch):
    from triton.compiler import ASTSource

    fn = launch.function()
    signature, constants, attrs = {}, dict(launch.constants), {}
    # arg_names runs on into the constexpr parameters, which launch.args stops before (they are in constants)
    for i, (name, value) in enumerate(zip(fn.arg_names, launch.args, strict=False)):
        kind, constant, divisible = _specialize(value)
        signature[name] = kind
        if constant is not None:
            constants[name] = constant
        if divisible:
            attrs[(i,)] = [["tt.divisibility", 16]]
    signature.update({name: "constexpr" for name in launch.constants})
    return ASTSource(fn, signature, constexprs=constants, attrs=attrs)


@functools.cache
def _ptxas():
    """Triton's bundled ptxas for sm_90 (path, version)."""
    from triton.backends.nvidia.compiler import get_ptxas

    return get_ptxas(SM90)


def _ptxas_log(ptx: str, fp_fusion: bool) -> str:
    """ptxas -v on the kernel's PTX (the tool, arch and options Triton used), for registers, spills, warnings."""
    from triton.backends.nvidia.compiler import sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernel.ptx"
        src.write_text(ptx)
        options = ["-lineinfo", "-v", "--regAllocOptLevel=2", f"--gpu-name={sm_arch_from_capability(SM90)}"]
        done = subprocess.run([_ptxas().path, *options, *([] if fp_fusion else ["--fmad=false"]), str(src),
                               "-o", str(src) + ".o"], capture_output=True, text=True, check=True)
    return done.stderr


def _number(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    if found is None:
        raise ValueError(f"ptxas output has no {pattern!r}:\n{text}")
    return int(found.group(1))


def compile_sm90(launch: Launch, shape: str) -> CompileReport:
    """Compile `launch` for sm_90 and report its registers, spills and wgmma use."""
    import triton
    from triton.backends.compiler import GPUTarget

    if triton.knobs.runtime.interpret:
        raise RuntimeError("ahead-of-time compilation needs a process without TRITON_INTERPRET=1")
    compiled = triton.compile(_source(launch), target=GPUTarget("cuda", SM90, 32),
                              options=dict(num_warps=launch.warps, num_stages=launch.stages))
    ptx = compiled.asm["ptx"]
    log = _ptxas_log(ptx, compiled.metadata.enable_fp_fusion)
    blocks = {k: v for k, v in launch.constants.items() if k.startswith("BLOCK_")}
    dtype = next(TRITON_DTYPES[a.dtype] for a in launch.args if isinstance(a, torch.Tensor) and a.is_floating_point())
    return CompileReport(
        kernel=launch.module.rsplit(".", 1)[-1].removesuffix("_triton"), dtype=dtype, shape=shape,
        tiles="x".join(str(v) for v in blocks.values()) + " (" + ", ".join(k[6:] for k in blocks) + ")",
        warps=launch.warps, stages=launch.stages,
        registers=_number(r"Used (\d+) registers", log),
        spill_bytes=_number(r"(\d+) bytes spill stores", log) + _number(r"(\d+) bytes spill loads", log),
        stack_bytes=_number(r"(\d+) bytes stack frame", log),
        shared_bytes=compiled.metadata.shared,
        wgmma="wgmma.mma_async" in ptx,
        wgmma_serialized="wgmma.mma_async instructions are serialized" in log,
        tf32=".tf32" in ptx,
    )


def compile_all(launches: list[tuple[str, Launch]], workers: int | None = None) -> list[CompileReport]:
    """`compile_sm90` for each (shape, launch), in forked worker processes (compiling is CPU-bound)."""
    import multiprocessing

    global _pending
    _pending = launches
    workers = min(len(launches), workers or os.cpu_count() or 1)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(_compile_pending, range(len(launches)))


_pending: list[tuple[str, Launch]] = []  # the launches `compile_all`'s forked workers read


def _compile_pending(i: int) -> CompileReport:
    shape, launch = _pending[i]
    return compile_sm90(launch, shape)


def sd15_launches(dtypes: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)) -> list[tuple[str, Launch]]:
    """Every kernel at the real sizes of the hallo-sd15 denoiser (512², 16 frames + 2 motion frames, CFG), with
    the operand layouts the model passes (head views of projection outputs), on the meta device: (what the row
    stands for, launch)."""
    from .audio_attention import audio_attention_launch
    from .group_norm import group_norm_launch
    from .temporal_attention import temporal_attention_launch
    from .two_source_attention import two_source_attention_launch

    meta = dict(device="meta")
    frames, motion_frames, heads, tokens = 16, 2, 8, 32
    rows = 2 * frames  # CFG halves x frames
    levels = ((40, 64 * 64), (80, 32 * 32), (160, 16 * 16))  # head dim, latent positions of its level

    def heads_of(batch: int, n: int, d: int, dtype: torch.dtype) -> torch.Tensor:
        """A projection's (batch, n, h·d) output viewed as (batch, h, n, d), as the model passes it."""
        return torch.empty(batch, n, heads * d, dtype=dtype, **meta).view(batch, n, heads, d).transpose(1, 2)

    launches = []
    for dtype in dtypes:
        for d, length in levels:
            q, k, v = (heads_of(rows, length, d, dtype) for _ in range(3))
            k_ref, v_ref = (heads_of(2, length, d, dtype) for _ in range(2))  # a video's two reference entries
            ref_index = torch.empty(frames, dtype=torch.int64, **meta)
            launches.append((f"head dim {d}", two_source_attention_launch(q, k, v, k_ref, v_ref, ref_index)[0]))
    for dtype in dtypes:
        for d, length in levels:
            for f in (frames, frames + motion_frames) if d == 160 else (frames,):  # the mid block sees n + f
                qkv = torch.empty(2, f, length, 3 * heads * d, dtype=dtype, **meta).view(2, f, length, 3, heads, d)
                launches.append((f"head dim {d}, {f} frames",
                                 temporal_attention_launch(*qkv.unbind(3))[0]))  # b f l 3 h d -> 3 x b f l h d
    for dtype in dtypes:
        for d, length in levels:
            stacked = 3 * heads  # full / face / lip attentions as heads
            q = torch.empty(rows, length, stacked, d, dtype=dtype, **meta)
            k, v = torch.empty(rows, tokens, 2, stacked, d, dtype=dtype, **meta).unbind(2)  # one kv projection
            masks = torch.empty(3, length, dtype=dtype, **meta)
            launches.append((f"head dim {d}", audio_attention_launch(q, k, v, masks)[0]))
    for dtype in dtypes:
        for channels, size in ((320, 64), (640, 32), (960, 64), (1280, 16), (1920, 32), (2560, 8)):
            x = torch.empty(rows, channels, size, size, dtype=dtype, **meta)
            weight = torch.empty(channels, dtype=dtype, **meta)
            launches.append((f"{channels // 32} channels/group",
                             group_norm_launch(x, weight, weight, 32, 1e-5, True)[0]))
    return launches


def markdown(reports: list[CompileReport]) -> str:
    lines = ["| kernel | dtype | shape | tiles | warps | stages | registers | spills (B) | shared (B) | wgmma |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        wgmma = ("yes, serialized" if r.wgmma_serialized else "yes") if r.wgmma else "no"
        lines.append(f"| {r.kernel} | {r.dtype} | {r.shape} | {r.tiles} | {r.warps} | {r.stages} | {r.registers} | "
                     f"{r.spill_bytes} | {r.shared_bytes} | {wgmma} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    import triton

    parser = argparse.ArgumentParser(prog="python -m emo.kernels.aot", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows, labelled as a compile report, here")
    args = parser.parse_args(argv)
    reports = compile_all(sd15_launches((torch.float16, torch.bfloat16, torch.float32)))
    print(markdown(reports))
    if args.json:
        args.json.write_text(json.dumps({
            "report": "ahead-of-time compile for sm_90 (H100) on a machine without a GPU: registers, spills, "
                      "shared memory and wgmma use of every kernel at hallo-sd15 sizes (float32: IEEE dot products, "
                      "no tensor cores); no kernel ran, no timing",
            "command": "python -m emo.kernels.aot --json " + str(args.json),
            "target": "cuda sm_90 (warp size 32)", "triton": triton.__version__, "torch": torch.__version__,
            "ptxas": f"{Path(_ptxas().path).name} {_ptxas().version}", "rows": [r.row() for r in reports],
        }, indent=1) + "\n")


if __name__ == "__main__":
    main()
