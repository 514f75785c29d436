"""Reduced precision on the trained demo model: PSNR of the frames against the fp32 render and the lip-sync score
of each, on held-out clips (identities and voices the training never saw), from the same noise.

Random weights amplify rounding ~10⁴×; the trained demo model is where a precision's cost means something.

    python bench/demo_precision.py [--device cuda] [--dtypes fp32,fp16,bf16] [--backends torch,torch-fast]
                                   [--clips 2] [--seconds 3] [--steps N] [--out F.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from emo.config import RunOptions
from emo.demo_model.clips import HELD_OUT_IDENTITIES, HELD_OUT_VOICES, identities, write_inputs
from emo.demo_model.voices import synth_voice
from emo.quality.render import psnr, render_and_measure
from emo.runtime.factory import RendererSpec, build_renderer, load_models


def _measure(name: str, renderer, run, inputs: list, reference: list) -> list[dict]:
    """Each input rendered from its seed: frame PSNR against the reference render, lip-sync r, seconds."""
    rows = []
    for k, (image, audio) in enumerate(inputs):
        start = time.perf_counter()
        report, frames = render_and_measure(renderer, run, image, audio, seed=k)
        rows.append({"psnr_db": psnr(frames, reference[k]), "lip_sync_r": report.lip_sync_r,
                     "seconds": round(time.perf_counter() - start, 2)})
    print(f"{name}: " + ", ".join(f"{r['psnr_db']:.1f} dB r {r['lip_sync_r']:.3f}" for r in rows), flush=True)
    return rows


def _fp8_renderer(scales: Path, base: RendererSpec, device: str):
    """torch-fast with the denoiser's linear layers in FP8: on tensor cores (fp16 elsewhere) on an FP8 GPU,
    emulated in float32 on the CPU."""
    from emo.runtime.fp8_convert import Fp8Scales
    from emo.runtime.renderer import Renderer
    from emo.runtime.torch_fast_backend import TorchFastBackend

    emulate = device == "cpu"
    backend = TorchFastBackend(load_models(base), device, "fp32" if emulate else "fp16", kernels=(),
                               fp8=Fp8Scales.load(scales), fp8_emulate=emulate)
    return f"torch-fast fp8{' (emulated)' if emulate else ''}", Renderer(backend), backend.fp8


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--dtypes", default="fp32,fp16,bf16")
    p.add_argument("--backends", default="torch", help="comma-separated; torch-fast needs CUDA")
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--steps", type=int)
    p.add_argument("--fp8-scales", type=Path,
                   help="also torch-fast with FP8 linear layers at these scales (emo-calibrate --torch-scales); on "
                        "the CPU the FP8 arithmetic is emulated (quantized operands, float32 products)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":  # float16 convolutions are a GPU feature
        dtypes = [d for d in args.dtypes.split(",") if d != "fp16"]
    else:
        dtypes = args.dtypes.split(",")
    backends = [b for b in args.backends.split(",") if device != "cpu" or b != "torch-fast"]
    base = RendererSpec(demo=True, backend="torch", device=device, dtype="fp32")
    models = load_models(base)
    run = RunOptions(steps=args.steps).apply(base.preset_run(), models.cfg)
    results: dict = {"reference": "torch fp32", "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = [write_inputs(Path(tmp), ident, synth_voice(HELD_OUT_VOICES.start + 200 + k, args.seconds,
                                                             lead_in=0.4), name=f"c{k}")
                  for k, ident in enumerate(identities(HELD_OUT_IDENTITIES, args.clips))]
        reference = []
        renderer = build_renderer(base, models)
        for k, (image, audio) in enumerate(inputs):
            report, frames = render_and_measure(renderer, run, image, audio, seed=k)
            reference.append(frames)
            results["variants"].setdefault("torch fp32", []).append({"lip_sync_r": report.lip_sync_r})
        for backend in backends:
            for dtype in dtypes:
                name = f"{backend} {dtype}"
                if name == "torch fp32":
                    continue
                try:
                    spec = RendererSpec(demo=True, backend=backend, device=device, dtype=dtype)
                    renderer = build_renderer(spec, load_models(spec))
                except Exception as e:  # a combination this machine cannot run is recorded, not fatal
                    results["variants"][name] = {"error": f"{type(e).__name__}: {e}"}
                    continue
                results["variants"][name] = _measure(name, renderer, run, inputs, reference)
        if args.fp8_scales:
            name, renderer, fp8 = _fp8_renderer(args.fp8_scales, base, device)
            results["variants"][name] = _measure(name, renderer, run, inputs, reference)
            results["fp8_layers"] = {"quantized": len(fp8.quantized), "kept": len(fp8.kept),
                                     "uncalibrated": len(fp8.uncalibrated)}
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu",
           "torch": torch.__version__, "run": {"steps": run.steps, "guidance_scale": run.guidance_scale,
                                               "size": run.size, "seconds": args.seconds},
           "command": "python bench/demo_precision.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                                    vars(args).items() if v is not None),
           **results}
    path = args.out or Path("bench/results") / f"{datetime.now():%Y-%m-%d}-{device.split(':')[0]}-demo-precision.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
