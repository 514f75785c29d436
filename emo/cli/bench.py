"""emo-bench: the renderer's own clip loop, timed stage by stage, for each backend side by side; the result goes
to a JSON file (frames/s end to end, per-stage p50/p90, peak memory, versions, the command).

Each backend renders a warm-up (graph capture, autotuning, cuDNN's algorithm search), then the timed clips, both
through `Renderer.render` (what emo-run runs): the renderer's timing hook records every stage's host time and, on
CUDA, its GPU time from events on the stream (no synchronisation, so the overlapped decode is timed as it runs).

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
import wave
from collections import defaultdict
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np

from ..media.outputs import atomic_output, output_target
from ..runtime.factory import BACKENDS
from .common import run_main

PROG = "emo-bench"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--preset", help="random weights of a model preset (default: hallo-sd15 on a GPU, tiny on the "
                                    "CPU)")
    p.add_argument("--demo", action="store_true", help="the trained demo model instead of random weights")
    p.add_argument("--size", type=int)
    p.add_argument("--frames", type=int)
    p.add_argument("--motion-frames", type=int, default=2)
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance-scale", type=float, help="(default: the preset's)")
    p.add_argument("--speeds", metavar="LIST",
                   help="comma-separated speed presets (quality, balanced, fast, realtime) to run side by side on each "
                        "backend, with UNet evaluations per frame and fidelity against quality (PSNR of the frames, "
                        "lip-sync r); --steps and --guidance-scale then come from each preset")
    p.add_argument("--clips", type=int, default=3, help="timed clips per backend (after the warm-up)")
    p.add_argument("--warmup", type=int, default=1, help="clips rendered untimed first")
    p.add_argument("--backends", default="torch,torch-fast", help=f"comma-separated: {', '.join(BACKENDS)}")
    p.add_argument("--engine-dir", metavar="DIR", help="an export directory (onnxruntime) or a plan directory "
                                                       "(tensorrt) of the same model")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--kernels", default="none",
                   help="torch-fast's Triton kernels: all, none or names (default none, as torch-fast runs; on the "
                        "CPU they would run in Triton's interpreter)")
    p.add_argument("--channels-last", action="store_true", help="NHWC convolutions (torch and torch-fast)")
    p.add_argument("--compile", nargs="?", const="graph", choices=["graph", "reduce-overhead"],
                   help="torch-fast's step through torch.compile (see emo-run --compile)")
    p.add_argument("--fp8-scales", metavar="FILE",
                   help="torch-fast's linear layers in FP8 with these scales (emo-calibrate --torch-scales; a GPU "
                        "with FP8, sm_89 or newer)")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="also profile one clip of STEPS denoising steps per backend with torch.profiler (top ops)")
    p.add_argument("--out", help="result JSON (default: <date>-<device>-bench.json in the current directory)")
    p.add_argument("--verbose", action="store_true")
    return p


class StageClock:
    """The renderer's timing hook: per stage, host wall time and, on CUDA, GPU time between events recorded on
    the current stream around it. Nothing synchronises until `summary`."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.wall: dict[str, list[float]] = defaultdict(list)
        self.events: dict[str, list] = defaultdict(list)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        import torch

        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.wall[stage].append(time.perf_counter() - t0)
            if self.cuda:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
                self.events[stage].append((start, end))

    def summary(self) -> dict[str, dict]:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        out = {}
        for stage, wall in self.wall.items():
            out[stage] = {"wall": _summary(wall)}
            if self.cuda:
                out[stage]["gpu"] = _summary([s.elapsed_time(e) / 1e3 for s, e in self.events[stage]])
        return out


def _summary(values: list[float]) -> dict:
    return {"p50": statistics.median(values), "p90": float(np.percentile(values, 90)), "n": len(values),
            "total": sum(values), "raw": values}


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def _audio_for(clips: int, run, source: str, path: Path) -> Path:
    """A voice track of exactly `clips` whole clips (the demo voice, looped if it is too short)."""
    from ..media.audio import load_audio

    voice = load_audio(source, run.sample_rate)
    need = clips * run.frames * run.sample_rate // run.fps
    return _write_wav(path, np.resize(voice, need), run.sample_rate)


def _bench_backend(renderer, image: str, audio: str, run, args, workdir: Path, frames_out: Path | None = None
                   ) -> dict:
    import torch

    be = renderer.backend
    cuda = be.device.type == "cuda"
    if args.warmup:
        renderer.render(image, _audio_for(args.warmup, run, audio, workdir / "warmup.wav"), workdir / "warmup.mp4", run)
    timed = _audio_for(args.clips, run, audio, workdir / "timed.wav")
    captures = getattr(be, "captures", None)
    if cuda:
        torch.cuda.synchronize(be.device)
        torch.cuda.reset_peak_memory_stats(be.device)
    clock = StageClock(be.device)
    renderer.timer = clock
    start = time.perf_counter()
    try:
        result = renderer.render(image, timed, workdir / "timed.mp4", run, frames_out=frames_out)
    finally:
        renderer.timer = None
    total = time.perf_counter() - start
    stages = clock.summary()
    peak = (torch.cuda.max_memory_allocated(be.device) if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    report = {"frames": result.frames, "seconds": result.seconds, "fps": result.frames / result.seconds,
              "prepare_seconds": total - result.seconds, "pipelined": be.pipelined, "stages": stages,
              "first_frame_seconds": result.first_frame_seconds,
              "unet_frame_evaluations_per_frame": result.unet_evaluations_per_frame,
              "peak_memory_bytes": int(peak),
              "peak_memory_kind": "cuda_max_allocated" if cuda else "process_max_rss"}
    if captures is not None:
        report["captures"] = {"warmup": captures, "timed": be.captures - captures}
    if args.profile:
        report["profile"] = _profile(renderer, image, audio, run, args.profile, workdir)
    return report


def _profile(renderer, image: str, audio: str, run, steps: int, workdir: Path, top: int = 30) -> list[dict]:
    """torch.profiler over one clip of `steps` steps -> the top ops by device time (CPU time without a GPU).
    Under a CUDA graph the kernels show as the graph's launch unless the profiler can see into graphs."""
    import dataclasses

    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = renderer.backend.device.type == "cuda"
    one = dataclasses.replace(run, steps=steps)
    wav = _audio_for(1, one, audio, workdir / "profile.wav")
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        renderer.render(image, wav, workdir / "profile.mp4", one)
        if cuda:
            torch.cuda.synchronize(renderer.backend.device)

    def device_us(e) -> float:
        return float(getattr(e, "device_time_total", 0) or getattr(e, "cuda_time_total", 0) or 0)

    events = sorted(prof.key_averages(), key=lambda e: (device_us(e), e.self_cpu_time_total), reverse=True)
    return [{"name": e.key, "calls": e.count, "device_us": device_us(e), "self_cpu_us": float(e.self_cpu_time_total)}
            for e in events[:top]]


def _environment(device) -> dict:
    import torch

    env = {"device": platform.processor() or platform.machine(), "python": platform.python_version(),
           "torch": torch.__version__, "platform": platform.platform()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env |= {"device": props.name, "compute_capability": f"{props.major}.{props.minor}",
                "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "driver": _driver_version()}
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


def _kernels(value: str) -> tuple[str, ...]:
    from ..errors import InputError
    from ..kernels.registry import KERNELS

    names = KERNELS if value == "all" else () if value == "none" else tuple(n for n in value.split(",") if n)
    unknown = set(names) - set(KERNELS)
    if unknown:
        raise InputError(f"unknown kernel(s) {', '.join(sorted(unknown))}; known: {', '.join(KERNELS)}")
    return names


def _write_json(out: Path, report: dict) -> None:
    with atomic_output(out) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")


def _bench_speeds(renderer, image: str, audio: str, runs: dict, args, workdir: Path) -> dict:
    """Each speed preset's bench on one backend, with its fidelity against the first preset given (quality when
    listed): PSNR of the timed frames and the lip-sync r of each render."""
    from ..quality.render import measure_render, psnr

    rows, reference = {}, None
    for speed, run in runs.items():
        frames_path = workdir / f"{speed}.npy"
        r = _bench_backend(renderer, image, audio, run, args, workdir, frames_path)
        frames = np.load(frames_path)
        prepared = renderer.prepare(image, _audio_for(args.clips, run, audio, workdir / "timed.wav"), run)
        r["lip_sync_r"] = float(measure_render(prepared, frames, run.fps, run.sample_rate).lip_sync_r)
        reference = reference or (speed, frames, r["lip_sync_r"])
        same = frames.shape == reference[1].shape
        r["fidelity"] = {"against": reference[0], "psnr_db": psnr(frames, reference[1]) if same else None,
                         "lip_sync_r_against": reference[2]}
        r["settings"] = {k: v for k, v in run.__dict__.items() if k != "motion_scale"}
        rows[speed] = r
        print(f"{PROG}: {renderer.backend.name:11s} {speed:9s} {r['fps']:8.3f} frames/s  "
              f"{r['unet_frame_evaluations_per_frame']:6.2f} UNet evaluations/frame  "
              f"PSNR {r['fidelity']['psnr_db'] or float('nan'):6.2f} dB  r {r['lip_sync_r']:.3f}")
    return rows


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..config import PRESETS, RunOptions
    from ..errors import InputError
    from ..runtime.backend import resolve_device
    from ..runtime.factory import GRAPH_BACKENDS, RendererSpec, build_renderer, exported_preset, load_models

    dev = resolve_device(args.device)
    cuda = dev.type == "cuda"
    if args.demo and args.preset:
        raise InputError("give --demo or --preset, not both")
    preset = "demo" if args.demo else args.preset or exported_preset(args.engine_dir) or \
        ("hallo-sd15" if cuda else "tiny")
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    base = PRESETS[preset].run
    speeds = [s.strip() for s in (args.speeds or "").split(",") if s.strip()]
    if speeds and (args.steps is not None or args.guidance_scale is not None):
        raise InputError("--speeds sets steps and guidance per preset; drop --steps and --guidance-scale")
    runs = {speed: RunOptions(speed=speed, frames=args.frames, motion_frames=args.motion_frames,
                              size=args.size).apply(base, PRESETS[preset].model) for speed in speeds}
    run = RunOptions(frames=args.frames, motion_frames=args.motion_frames, steps=args.steps,
                     guidance_scale=args.guidance_scale, size=args.size).apply(base, PRESETS[preset].model)
    if args.clips < 1 or args.warmup < 0:
        raise InputError("--clips must be >= 1 and --warmup >= 0")
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not names or set(names) - set(BACKENDS):
        raise InputError(f"--backends takes {', '.join(BACKENDS)}")
    if args.fp8_scales and "torch-fast" not in names:
        raise InputError("--fp8-scales is one of the torch-fast options: add torch-fast to --backends")
    dtype = args.dtype or ("fp16" if cuda else "fp32")
    kernels = _kernels(args.kernels)
    specs = {name: RendererSpec(
        demo=args.demo and name not in GRAPH_BACKENDS, random=None if args.demo or name in GRAPH_BACKENDS else preset,
        engine_dir=args.engine_dir if name in GRAPH_BACKENDS else None, backend=name, device=str(dev),
        dtype=None if name in GRAPH_BACKENDS else dtype, kernels=kernels if name == "torch-fast" else None,
        channels_last=args.channels_last, fast_on_cpu=not cuda,
        compile=args.compile if name == "torch-fast" else None,
        fp8_scales=args.fp8_scales if name == "torch-fast" else None) for name in names}
    for spec in specs.values():
        spec.check()
    torch_specs = [s for s in specs.values() if s.backend not in GRAPH_BACKENDS]
    models = load_models(torch_specs[0]) if torch_specs else None  # loaded once, shared by the torch backends
    assets = resources.files("emo") / "assets"
    image, audio = str(assets / "portrait.jpg"), str(assets / "speech.wav")
    env = _environment(dev)
    report = {"command": " ".join([PROG, *sys.argv[1:]]) if sys.argv[0].endswith(PROG) else " ".join(sys.argv),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "environment": env,
              "settings": {"preset": preset, "dtype": dtype, "device": str(dev), "kernels": list(kernels),
                           "channels_last": args.channels_last, "compile": args.compile,
                           "fp8_scales": args.fp8_scales,
                           "run": run.__dict__ | {"motion_scale": list(run.motion_scale)},
                           "clips": args.clips, "warmup": args.warmup},
              "results": {}, "complete": False}
    out = output_target(Path(args.out) if args.out else Path(
        f"{datetime.now():%Y-%m-%d}-{env['device'].replace(' ', '_')}-bench.json"))
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            renderer = build_renderer(specs[name], None if name in GRAPH_BACKENDS else models)
            if speeds:
                report.setdefault("speeds", {})[name] = _bench_speeds(renderer, image, audio, runs, args, Path(tmp))
                _write_json(out, report)
                continue
            r = report["results"][name] = _bench_backend(renderer, image, audio, run, args, Path(tmp))
            step = r["stages"]["step"].get("gpu", r["stages"]["step"]["wall"])
            print(f"{PROG}: {name:11s} {r['fps']:8.3f} frames/s  step p50 {step['p50'] * 1e3:9.2f} ms  "
                  f"peak {r['peak_memory_bytes'] / 2**30:6.2f} GiB")
            _write_json(out, report)  # a run cut short keeps the backends done
            del renderer
            if cuda:
                torch.cuda.empty_cache()
    if "torch" in report["results"]:
        ref = report["results"]["torch"]["fps"]
        report["speedup_fps"] = {n: r["fps"] / ref for n, r in report["results"].items() if n != "torch"}
        for n, x in report["speedup_fps"].items():
            print(f"{PROG}: {n} / torch = {x:.2f}x")
    report["complete"] = True
    _write_json(out, report)
    print(f"{PROG}: wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, _run, _parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
