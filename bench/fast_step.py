"""The lighter torch-fast step: eager vs compiled vs compiled + FP8 step times (guided and conditional-only), the
compile warm-up of a cold and a warm inductor cache, and frames of the trained demo model in fp16 / FP8 against
fp32 (PSNR). On a GPU at real size; `--dry-run` runs every part on the CPU at the tiny size in seconds (torch.compile
without code generation, FP8 emulated), which tests the harness, not the speed.

    python bench/fast_step.py step   [--dry-run] [--steps N] [--out F.json]     # per-step p50 of each variant
    python bench/fast_step.py warmup [--dry-run] [--out F.json]               # first compiled step: cold, warm cache
    python bench/fast_step.py psnr   [--dry-run] [--seconds S] [--out F.json]   # demo model fp16/bf16/FP8 vs fp32
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inputs(directory: Path, seconds: float, k: int = 0) -> tuple[Path, Path]:
    from emo.demo_model.clips import HELD_OUT_IDENTITIES, HELD_OUT_VOICES, identities, write_inputs
    from emo.demo_model.voices import synth_voice

    ident = identities(HELD_OUT_IDENTITIES, k + 1)[k]
    return write_inputs(directory, ident, synth_voice(HELD_OUT_VOICES.start + 200 + k, seconds, lead_in=0.4),
                        name=f"c{k}")


def _settings(args) -> dict:
    if args.dry_run:
        return dict(device="cpu", preset="tiny", dtype="fp32", size=64, frames=4, compiler="eager", emulate=True)
    return dict(device="cuda", preset="hallo-sd15", dtype="fp16", size=512, frames=16, compiler="inductor",
                emulate=False)


def _step_fn(backend, prepared, run, plan):
    """A closure running one step of the first clip as `plan` says."""
    from emo.sampling.conditioning import StepSchedule

    video = backend.prepare_video(prepared.portrait, run.motion_frames)
    motion = prepared.portrait.pixels.to(backend.device, backend.dtype).expand(run.motion_frames, -1, -1, -1)
    clip = backend.prepare_clip(video, motion, prepared.windows[:run.frames])
    steps = StepSchedule(torch.tensor([999]), run, backend.device, backend.dtype)
    latent = run.size // 8
    x = torch.randn(1, 4, run.frames, latent, latent, generator=torch.Generator().manual_seed(0))
    inputs = steps.inputs(x.to(backend.device, backend.dtype), 0, plan.halves)
    return lambda: backend.step(clip, inputs, plan)


def _time(fn, device, iters: int) -> dict:
    t0 = time.perf_counter()
    fn()  # warm-up (compiles, captures)
    _sync(device)
    first = time.perf_counter() - t0
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"first_s": first, "ms_p50": statistics.median(times), "ms": times}


def _scales(models, prepared, run, dtype, device):
    """Activation amax of the denoiser's linear layers over one eager guided step -> FP8 scales."""
    from emo.calibration.linear_amax import fp8_scales, record_linear_amax
    from emo.runtime.backend import TorchBackend
    from emo.sampling.step_plan import GUIDED

    eager = TorchBackend(models, device, dtype)
    fn = _step_fn(eager, prepared, run, GUIDED)
    return fp8_scales(record_linear_amax(eager.models.net.denoising_unet, fn))


def cmd_step(args, s: dict) -> dict:
    from emo.checkpoints.model_dir import random_models
    from emo.config import PRESETS
    from emo.runtime import compiled_step
    from emo.runtime.backend import TorchBackend
    from emo.runtime.renderer import Renderer
    from emo.runtime.torch_fast_backend import TorchFastBackend
    from emo.sampling.step_plan import CONDITIONAL, GUIDED

    compiled_step.COMPILER = s["compiler"]
    cfg = PRESETS[s["preset"]].model
    run = PRESETS[s["preset"]].run.__class__(**{**PRESETS[s["preset"]].run.__dict__, "size": s["size"],
                                                "frames": s["frames"], "motion_frames": 2, "steps": 1})
    device = torch.device(s["device"])
    with tempfile.TemporaryDirectory() as tmp:
        image, audio = _inputs(Path(tmp), run.frames / run.fps + 0.2)
        prepared = Renderer.random(preset=s["preset"], device="cpu").prepare(image, audio, run)
    scales = _scales(random_models(0, cfg), prepared, run, s["dtype"], device)
    variants = {
        "eager": lambda: TorchBackend(random_models(0, cfg), device, s["dtype"]),
        "torch-fast": lambda: TorchFastBackend(random_models(0, cfg), device, s["dtype"], kernels=()),
        "compiled": lambda: TorchFastBackend(random_models(0, cfg), device, s["dtype"], kernels=(), compile="graph"),
        "compiled+fp8": lambda: TorchFastBackend(random_models(0, cfg), device, s["dtype"], kernels=(),
                                                 compile="graph", fp8=scales, fp8_emulate=s["emulate"]),
    }
    out = {}
    for name, make in variants.items():
        backend = make()
        for plan_name, plan in (("guided", GUIDED), ("conditional", CONDITIONAL)):
            out[f"{name} {plan_name}"] = _time(_step_fn(backend, prepared, run, plan), device, args.steps)
            print(name, plan_name, f"{out[f'{name} {plan_name}']['ms_p50']:.1f} ms", flush=True)
        if name == "compiled+fp8":
            out["fp8_layers"] = {"quantized": len(backend.fp8.quantized), "kept": len(backend.fp8.kept)}
        del backend
        torch._dynamo.reset()
    return out


def cmd_warmup(args, s: dict) -> dict:
    """The first compiled guided step in a fresh process, twice with one inductor cache directory: cold, warm."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = os.environ | {"EMO_INDUCTOR_CACHE": cache, "TORCHINDUCTOR_CACHE_DIR": cache}
        for name in ("cold", "warm"):
            cmd = [sys.executable, __file__, "first-step", *(["--dry-run"] if args.dry_run else [])]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            out[name] = {"process_s": time.perf_counter() - t0, **json.loads(proc.stdout.strip().splitlines()[-1])}
            print(name, out[name], flush=True)
    return out


def cmd_first_step(args, s: dict) -> dict:
    from emo.checkpoints.model_dir import random_models
    from emo.config import PRESETS
    from emo.runtime import compiled_step
    from emo.runtime.renderer import Renderer
    from emo.runtime.torch_fast_backend import TorchFastBackend
    from emo.sampling.step_plan import GUIDED

    compiled_step.COMPILER = s["compiler"]
    run = PRESETS[s["preset"]].run.__class__(**{**PRESETS[s["preset"]].run.__dict__, "size": s["size"],
                                                "frames": s["frames"], "motion_frames": 2, "steps": 1})
    with tempfile.TemporaryDirectory() as tmp:
        image, audio = _inputs(Path(tmp), run.frames / run.fps + 0.2)
        prepared = Renderer.random(preset=s["preset"], device="cpu").prepare(image, audio, run)
    backend = TorchFastBackend(random_models(0, PRESETS[s["preset"]].model), s["device"], s["dtype"], kernels=(),
                               compile="graph")
    fn = _step_fn(backend, prepared, run, GUIDED)
    t0 = time.perf_counter()
    fn()
    _sync(torch.device(s["device"]))
    return {"first_step_s": time.perf_counter() - t0}


def cmd_psnr(args, s: dict) -> dict:
    """The demo model's frames per variant against its fp32 eager render (same noise); FP8 scales recorded during
    that fp32 render (calibration and evaluation on the same held-out clip: an optimistic bound)."""
    from emo.calibration.linear_amax import fp8_scales, record_linear_amax
    from emo.config import RunOptions
    from emo.quality.render import psnr, render_and_measure
    from emo.runtime.backend import TorchBackend
    from emo.runtime.factory import RendererSpec, load_models
    from emo.runtime.renderer import Renderer
    from emo.runtime.torch_fast_backend import TorchFastBackend

    base = RendererSpec(demo=True, backend="torch", device=s["device"], dtype="fp32")
    run = RunOptions(steps=args.demo_steps).apply(base.preset_run(), load_models(base).cfg)
    device, half = s["device"], ("fp16" if s["device"] == "cuda" else "fp32")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        image, audio = _inputs(Path(tmp), args.seconds)
        ref_backend = TorchBackend(load_models(base), device, "fp32")
        got = {}
        amax = record_linear_amax(ref_backend.models.net.denoising_unet,
                                  lambda: got.update(zip(("report", "frames"), render_and_measure(
                                      Renderer(ref_backend), run, image, audio, seed=0), strict=True)))
        reference = got["frames"]
        out["torch fp32"] = {"lip_sync_r": got["report"].lip_sync_r}
        variants = {f"torch {d}": (lambda d=d: TorchBackend(load_models(base), device, d))
                    for d in (["fp16", "bf16"] if device == "cuda" else ["bf16"])}
        variants[f"torch-fast {half} + FP8"] = lambda: TorchFastBackend(
            load_models(base), device, half, kernels=(), fp8=fp8_scales(amax), fp8_emulate=s["emulate"])
        for name, make in variants.items():
            report, frames = render_and_measure(Renderer(make()), run, image, audio, seed=0)
            out[name] = {"psnr_db": psnr(frames, reference), "lip_sync_r": report.lip_sync_r}
            print(name, out[name], flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["step", "warmup", "first-step", "psnr"])
    p.add_argument("--dry-run", action="store_true", help="the CPU at the tiny size: tests the harness only")
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant and plan")
    p.add_argument("--seconds", type=float, default=2.0, help="psnr: seconds of held-out voice")
    p.add_argument("--demo-steps", type=int, default=None, help="psnr: denoising steps (default: the demo's)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    s = _settings(args)
    command = {"step": cmd_step, "warmup": cmd_warmup, "first-step": cmd_first_step, "psnr": cmd_psnr}[args.what]
    result = {"what": args.what, "settings": s, "torch": torch.__version__,
              "device": torch.cuda.get_device_name() if s["device"] == "cuda" else "cpu",
              "results": command(args, s)}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["results"] if args.what == "first-step" else {"done": args.what}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
