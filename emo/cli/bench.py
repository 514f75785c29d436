"""emo-bench: eager torch (Hallo-style: reference pass every clip, no graphs, no fused kernels) and torch-fast,
side by side in one run, per stage, with frames/s end to end and peak memory; the result goes to a JSON file.

On a CUDA GPU it defaults to the real-size hallo-sd15 preset with random weights (512², 16 frames a clip,
2 motion frames, 40 steps, CFG 3.5, fp16). Without one it runs the tiny preset on the CPU (fp32, no graphs,
no kernels), which exercises the harness itself.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import numpy as np

from ..media.outputs import atomic_output, output_target
from .common import run_main

PROG = "emo-bench"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--preset", help="model preset (default: hallo-sd15 on a GPU, tiny on the CPU)")
    p.add_argument("--size", type=int)
    p.add_argument("--frames", type=int)
    p.add_argument("--motion-frames", type=int, default=2)
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance-scale", type=float, default=3.5)
    p.add_argument("--clips", type=int, default=3, help="timed clips per backend (after the warm-up clips)")
    p.add_argument("--warmup", type=int, default=1, help="untimed clips first (graph capture, autotuning)")
    p.add_argument("--no-render", dest="render", action="store_false",
                   help="skip the end-to-end run of the real renderer (emo-run's streaming path) on --clips clips "
                        "of audio")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="also profile STEPS denoising steps of each backend with torch.profiler (top ops by time)")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--backends", default="eager,fast", help="comma-separated: eager, fast")
    p.add_argument("--out", help="result JSON (default: <date>-<device>-bench.json in the current directory)")
    p.add_argument("--verbose", action="store_true")
    return p


class _Clock:
    """Wall time of a stage, synchronising the device first so that queued GPU work is counted."""

    def __init__(self, device):
        import torch

        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.stages: dict[str, list[float]] = {}

    def time(self, stage: str, fn, *args):
        self.sync()
        start = time.perf_counter()
        out = fn(*args)
        self.sync()
        self.stages.setdefault(stage, []).append(time.perf_counter() - start)
        return out


def _summary(values: list[float]) -> dict:
    return {"p50": statistics.median(values), "p90": float(np.percentile(values, 90)), "n": len(values),
            "raw": values}


def _bench_backend(name, backend, prepared, run, args, audio_path, workdir) -> dict:
    import torch

    from ..media.mp4 import Mp4Writer
    from ..sampling.clip import sample
    from ..sampling.ddim import DDIM

    f, n = run.frames, run.motion_frames
    clock = _Clock(backend.device)
    scheduler = DDIM(backend.cfg.scheduler, run.steps)
    latent = run.size // backend.cfg.vae.downscale
    gen = torch.Generator().manual_seed(0)
    if backend.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(backend.device)
    motion = prepared.portrait.pixels.to(backend.device, backend.dtype).expand(n, -1, -1, -1)
    video, timed_start, frames_done = None, None, 0
    with Mp4Writer(workdir / f"{name}.mp4", run.fps, run.size, audio_path) as writer:
        for c in range(args.warmup + args.clips):
            if c == args.warmup:
                clock.stages.clear()
                clock.sync()
                timed_start = time.perf_counter()
            clip_clock = clock if c >= args.warmup else _Clock(backend.device)
            windows = prepared.windows[(c % (prepared.windows.shape[0] // f)) * f:][:f]
            if video is None or name == "eager":  # Hallo runs the ReferenceNet on the reference every clip
                video = clip_clock.time("reference", backend.prepare_video, prepared.portrait, n)
            clip = clip_clock.time("motion+audio tokens", backend.prepare_clip, video, motion, windows)
            noise = torch.randn((1, backend.cfg.vae.latent_channels, f, latent, latent), generator=gen)

            def predict(x, t):
                return clip_clock.time("step", backend.predict, clip, x, t, run)

            latents = sample(predict, scheduler, noise.to(backend.device, backend.dtype))
            frames = clip_clock.time("decode", backend.decode, latents)
            if n:
                motion = frames[-n:].to(backend.device, backend.dtype) * 2 - 1
            pixels = np.round(frames.permute(0, 2, 3, 1).cpu().numpy() * 255).astype(np.uint8)  # f c h w -> f h w c
            clip_clock.time("encode", writer.write, pixels)
            if c >= args.warmup:
                frames_done += f
        clock.sync()
        total = time.perf_counter() - timed_start
    profile = _profile(backend, clip, latents, run, args.profile) if args.profile else None
    peak = (torch.cuda.max_memory_allocated(backend.device) if backend.device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    busy = {k: sum(v) for k, v in clock.stages.items()}
    return {"stages": {k: _summary(v) for k, v in clock.stages.items()},
            "share": {k: v / total for k, v in busy.items()},
            "seconds": total, "frames": frames_done, "fps": frames_done / total,
            "peak_memory_bytes": int(peak), "peak_memory_kind": "cuda_max_allocated" if backend.device.type == "cuda"
            else "process_max_rss"} | ({"profile": profile} if profile else {})


def _profile(backend, clip, latents, run, steps: int, top: int = 30) -> list[dict]:
    """torch.profiler over `steps` guided steps -> the top ops by device time (CPU time without a GPU). Under a
    CUDA graph the kernels show as the graph's launch unless the profiler can see into graphs."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = backend.device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for i in range(steps):
            backend.predict(clip, latents, 999 - i, run)
        if cuda:
            torch.cuda.synchronize(backend.device)

    def device_us(e) -> float:
        return float(getattr(e, "device_time_total", 0) or getattr(e, "cuda_time_total", 0) or 0)

    events = sorted(prof.key_averages(), key=lambda e: (device_us(e), e.self_cpu_time_total), reverse=True)
    return [{"name": e.key, "calls": e.count, "device_us": device_us(e), "self_cpu_us": float(e.self_cpu_time_total)}
            for e in events[:top]]


def _bench_render(renderer, image: str, audio: str, run, clips: int, workdir: Path) -> dict:
    """The real renderer end to end (after the staged run, so graphs are captured): frames/s of the streaming path,
    where a pipelined backend overlaps decode, host copies and encoding with the next clip's denoising."""
    import wave

    from ..media.audio import load_audio

    samples = load_audio(audio, run.sample_rate)[:clips * run.frames * run.sample_rate // run.fps]
    short = workdir / "render.wav"
    with wave.open(str(short), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(run.sample_rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    result = renderer.render(image, short, workdir / "render.mp4", run)
    return {"frames": result.frames, "seconds": result.seconds, "fps": result.frames / result.seconds,
            "pipelined": renderer.backend.pipelined}


def _environment(device) -> dict:
    import torch

    env = {"device": platform.processor() or platform.machine(), "python": platform.python_version(),
           "torch": torch.__version__, "platform": platform.platform()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env |= {"device": props.name, "compute_capability": f"{props.major}.{props.minor}",
                "cuda": torch.version.cuda, "driver": _driver_version()}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        pass
    return env


def _driver_version() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return None


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..config import PRESETS, RUN_PRESETS, RunConfig
    from ..errors import InputError
    from ..kernels.registry import KERNELS
    from ..runtime.backend import TorchBackend
    from ..runtime.models import demo_models
    from ..runtime.renderer import Renderer
    from ..runtime.torch_fast_backend import TorchFastBackend

    cuda = torch.cuda.is_available()
    preset = args.preset or ("hallo-sd15" if cuda else "tiny")
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    base = RUN_PRESETS[preset]
    run = RunConfig(frames=args.frames or base.frames, motion_frames=args.motion_frames, steps=args.steps or base.steps,
                    guidance_scale=args.guidance_scale, size=args.size or base.size)
    run.validate(PRESETS[preset])
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not names or set(names) - {"eager", "fast"}:
        raise InputError("--backends takes eager and/or fast")
    device = "cuda" if cuda else "cpu"
    dtype = args.dtype or ("fp16" if cuda else "fp32")
    models = demo_models(cfg=PRESETS[preset])
    assets = resources.files("emo") / "assets"
    image, audio = str(assets / "portrait.jpg"), str(assets / "speech.wav")
    kernels = KERNELS if cuda else ()  # Triton's interpreter would dominate a CPU run
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            backend = (TorchBackend(models, device, dtype) if name == "eager" else
                       TorchFastBackend(models, device, dtype, kernels=kernels))
            renderer = Renderer(backend)
            start = time.perf_counter()
            prepared = renderer.prepare(image, audio, run)
            audio_s = time.perf_counter() - start
            results[name] = _bench_backend(name, backend, prepared, run, args, Path(audio), Path(tmp))
            results[name]["prepare_seconds"] = audio_s  # decode, face detection, audio features
            if args.render:
                results[name]["render"] = _bench_render(renderer, image, audio, run, args.clips, Path(tmp))
            e2e = f"  render {results[name]['render']['fps']:8.3f} frames/s" if args.render else ""
            print(f"{PROG}: {name:5s} {results[name]['fps']:8.3f} frames/s{e2e}  "
                  f"step p50 {results[name]['stages']['step']['p50'] * 1e3:9.2f} ms  "
                  f"peak {results[name]['peak_memory_bytes'] / 2**30:6.2f} GiB")
            del backend, renderer
            if cuda:
                torch.cuda.empty_cache()
    env = _environment(torch.device(device))
    report = {"command": " ".join([PROG, *sys.argv[1:]]) if sys.argv[0].endswith(PROG) else " ".join(sys.argv),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "environment": env,
              "settings": {"preset": preset, "dtype": dtype, "cuda_graphs": cuda,
                           "kernels": list(kernels),
                           "run": run.__dict__ | {"motion_scale": list(run.motion_scale)},
                           "clips": args.clips, "warmup": args.warmup},
              "results": results}
    if {"eager", "fast"} <= set(results):
        report["speedup_fps"] = results["fast"]["fps"] / results["eager"]["fps"]
        print(f"{PROG}: fast / eager = {report['speedup_fps']:.2f}x")
    out = Path(args.out) if args.out else Path(f"{datetime.now():%Y-%m-%d}-{env['device'].replace(' ', '_')}-bench.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(output_target(out)) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{PROG}: wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, _run, _parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
