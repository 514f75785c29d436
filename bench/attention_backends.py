"""The denoiser's biggest attention, timed through every path it can take: the two-source self-attention of each
UNet level at real size (16 frames, CFG: 16 uncond rows over their own tokens, 16 cond rows over [own ‖ one of
the two reference entries]), via its plain-torch form under each SDPA back end (flash, cuDNN, memory-efficient,
math), and via the Triton kernel. Head dims 40 / 80 / 160 go to the back ends as they are (no padding in our
code; a back end may round up inside). Each result is checked against float32 math attention.

    PYTHONPATH=. python3 bench/attention_backends.py --out attention.json      (on a GPU)
    PYTHONPATH=. python3 bench/attention_backends.py --tiny --device cpu      (small shapes: the script itself)
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from emo.kernels import registry
from emo.kernels.two_source_attention import two_source_attention, two_source_attention_reference

LEVELS = {"real": [(40, 4096), (80, 1024), (160, 256)], "tiny": [(40, 64), (80, 16)]}  # head dim, tokens
FRAMES, HEADS, ENTRIES = {"real": 16, "tiny": 2}, 8, 2


def _backends() -> dict[str, object]:
    from torch.nn.attention import SDPBackend

    names = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
             "math": "MATH"}
    return {k: getattr(SDPBackend, v) for k, v in names.items() if hasattr(SDPBackend, v)}


def _time(fn, device: torch.device, iters: int) -> list[float]:
    """Seconds per call (CUDA events on a GPU)."""
    fn()
    out = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return out


def _reference(q, k, v, k_ref, v_ref, index) -> torch.Tensor:
    """float32 math attention, one row at a time (the full score matrix would not fit at real size)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fu = q.shape[0] - index.shape[0]
    rows = []
    with sdpa_kernel([SDPBackend.MATH]):
        for b in range(q.shape[0]):
            sl = slice(b, b + 1)
            kr = index[b - fu:b - fu + 1] if b >= fu else index[:0]
            rows.append(two_source_attention_reference(q[sl].float(), k[sl].float(), v[sl].float(),
                                                       k_ref.float(), v_ref.float(), kr))
    return torch.cat(rows)


def run(size: str, device: torch.device, dtype: torch.dtype, iters: int) -> list[dict]:
    from torch.nn.attention import sdpa_kernel

    g = torch.Generator().manual_seed(0)
    f = FRAMES[size]
    results = []
    for d, tokens in LEVELS[size]:
        q, k, v = (torch.randn(2 * f, HEADS, tokens, d, generator=g).to(device, dtype) for _ in range(3))
        k_ref, v_ref = (torch.randn(ENTRIES, HEADS, tokens, d, generator=g).to(device, dtype) for _ in range(2))
        index = ((f + torch.arange(f)) % ENTRIES).to(device)
        want = _reference(q, k, v, k_ref, v_ref, index)
        flop = 4 * HEADS * d * tokens * (f * tokens + f * 2 * tokens)  # QK^T and PV, uncond + cond rows
        args = (q, k, v, k_ref, v_ref, index)
        paths = {name: functools.partial(_with_backend, sdpa_kernel, b, *args) for name, b in _backends().items()}
        paths["triton"] = functools.partial(_triton, *args)
        for name, fn in paths.items():
            entry = {"path": name, "head_dim": d, "tokens": tokens, "rows": 2 * f, "dtype": str(dtype)[6:]}
            try:
                got = fn()
                times = _time(fn, device, iters)
            except (RuntimeError, NotImplementedError) as e:
                entry["unavailable"] = str(e).strip().splitlines()[0][:200]
            else:
                p50 = statistics.median(times)
                entry |= {"ms_p50": p50 * 1e3, "tflops": flop / p50 / 1e12,
                          "max_abs_err": float((got.float() - want).abs().max())}
            results.append(entry)
            print(json.dumps(entry))
    return results


def _with_backend(sdpa_kernel, backend, *args) -> torch.Tensor:
    with sdpa_kernel([backend]), registry.using(()):
        return two_source_attention(*args)


def _triton(*args) -> torch.Tensor:
    with registry.using({"two_source_attention"}):
        if not registry.active("two_source_attention", args[0]):
            raise RuntimeError("the Triton kernel needs Triton and CUDA tensors (or TRITON_INTERPRET=1)")
        return two_source_attention(*args)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["fp16", "bf16", "fp32"])
    p.add_argument("--tiny", action="store_true", help="small shapes (checks the script on a CPU)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--out")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[
        args.dtype or ("fp16" if device.type == "cuda" else "fp32")]
    torch.backends.cuda.matmul.allow_tf32 = False
    results = run("tiny" if args.tiny else "real", device, dtype, args.iters)
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "results": results}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
