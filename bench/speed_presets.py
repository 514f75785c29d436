"""Speed presets side by side on the trained demo model: UNet frame-evaluations per frame, CPU wall time, and the
fidelity of each against `quality` (Hallo's 40 guided DDIM steps) on held-out portraits and voices: PSNR of the
frames and the lip-sync r of each render beside quality's. With --sweep, also the candidate settings the presets
were chosen from (sampler, steps, guidance interval, cache interval, cached levels).

Every number is exact (evaluations) or measured here (time, fidelity); the frames/s an H200 would reach at real
size is projected from the measured 230 ms guided real-size step (bench/results/2026-11-26-h200-gpu-session):
7.2 ms per UNet frame-evaluation, decode not included.

    python bench/speed_presets.py [--identities 2] [--seconds 3] [--sweep] [--out F.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from emo.config import SPEEDS, RunConfig, RunOptions
from emo.demo_model.clips import HELD_OUT_IDENTITIES, HELD_OUT_VOICES, identities, write_inputs
from emo.demo_model.voices import synth_voice
from emo.quality.render import measure_render, psnr
from emo.runtime.factory import RendererSpec, build_renderer
from emo.sampling.cost import run_evaluations

H200_GUIDED_STEP_MS = 230.0  # real size (hallo-sd15, 512², 16 frames, fp16): both halves of 16 frames
H200_MS_PER_EVALUATION = H200_GUIDED_STEP_MS / 32

# (name, overrides of quality, cached levels): what the presets were chosen from
CANDIDATES = [
    ("ddim 12", dict(steps=12), 1),
    ("dpm++ 12", dict(steps=12, sampler="dpm++"), 1),
    ("dpm++ 16, guided first half", dict(steps=16, sampler="dpm++", guidance_interval=(0.0, 0.5)), 1),
    ("dpm++ 16, guided second half", dict(steps=16, sampler="dpm++", guidance_interval=(0.5, 1.0)), 1),
    ("dpm++ 8", dict(steps=8, sampler="dpm++"), 1),
    ("dpm++ 12, cache 2 (1 level)", dict(steps=12, sampler="dpm++", cache_interval=2), 1),
    ("dpm++ 12, cache 2 (2 levels)", dict(steps=12, sampler="dpm++", cache_interval=2), 2),
    ("dpm++ 6, guided first third", dict(steps=6, sampler="dpm++", guidance_interval=(0.0, 0.34)), 1),
    ("dpm++ 6, guided last third", dict(steps=6, sampler="dpm++", guidance_interval=(0.66, 1.0)), 1),
    ("dpm++ 4", dict(steps=4, sampler="dpm++"), 1),
    ("dpm++ 4, guided second half", dict(steps=4, sampler="dpm++", guidance_interval=(0.5, 1.0)), 1),
    ("dpm++ 4, cache 2 (1 level)", dict(steps=4, sampler="dpm++", cache_interval=2), 1),
    ("dpm++ 4, cache 2 (2 levels)", dict(steps=4, sampler="dpm++", cache_interval=2), 2),
    ("dpm++ 4, cache 2 (1 level), first clip 8", dict(steps=4, sampler="dpm++", cache_interval=2,
                                                      first_clip_frames=8), 1),
    ("dpm++ 3", dict(steps=3, sampler="dpm++"), 1),
    ("ddim 4", dict(steps=4), 1),
    ("dpm++ 6, no guidance", dict(steps=6, sampler="dpm++", guidance_scale=1.0), 1),
]


def render(renderer, run: RunConfig, image: Path, audio: Path, seed: int) -> dict:
    prepared = renderer.prepare(image, audio, run)
    start = time.perf_counter()
    first, chunks = None, []
    for frames in renderer.stream(prepared, run, seed):
        first = time.perf_counter() - start if first is None else first
        chunks.append(frames)
    seconds = time.perf_counter() - start
    frames = np.concatenate(chunks)
    report = measure_render(prepared, frames, run.fps, run.sample_rate)
    return {"frames": frames, "seconds": seconds, "first_frame_seconds": first, "lip_sync_r": report.lip_sync_r}


def settings(run: RunConfig) -> dict:
    return {"steps": run.steps, "sampler": run.sampler, "guidance_scale": run.guidance_scale,
            "guidance_interval": list(run.guidance_interval), "cache_interval": run.cache_interval,
            "cache_levels": run.cache_levels, "first_clip_frames": run.first_clip_frames}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--identities", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sweep", action="store_true", help="also the candidate settings")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    spec = RendererSpec(demo=True, backend="torch", device="cpu", dtype="fp32")
    renderer = build_renderer(spec)
    cfg = renderer.cfg
    quality = RunOptions(speed="quality").apply(spec.preset_run(), cfg)
    configs = [(name, RunOptions(speed=name).apply(spec.preset_run(), cfg), "preset") for name in SPEEDS]
    if args.sweep:
        configs += [(name, dataclasses.replace(quality, **kw, cache_levels=levels), "candidate")
                    for name, kw, levels in CANDIDATES]
    rows = {name: {"kind": kind, "settings": settings(run), "cases": []} for name, run, kind in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for k, identity in enumerate(identities(HELD_OUT_IDENTITIES, args.identities)):
            voice = synth_voice(HELD_OUT_VOICES.start + k, args.seconds)
            image, audio = write_inputs(Path(tmp), identity, voice, name=f"case{k}")
            reference = None
            for name, run, _ in configs:
                out = render(renderer, run, image, audio, args.seed)
                reference = out if name == "quality" else reference
                case = {"identity": identity, "voice": HELD_OUT_VOICES.start + k, "seconds": round(out["seconds"], 2),
                        "first_frame_seconds": round(out["first_frame_seconds"], 2),
                        "lip_sync_r": round(float(out["lip_sync_r"]), 4),
                        "psnr_vs_quality": round(psnr(out["frames"], reference["frames"]), 2),
                        "lip_sync_r_quality": round(float(reference["lip_sync_r"]), 4)}
                rows[name]["cases"].append(case)
                print(f"{name:32s} id {identity}: {case['seconds']:6.1f} s  r {case['lip_sync_r']:.3f} "
                      f"(quality {case['lip_sync_r_quality']:.3f})  psnr {case['psnr_vs_quality']:.2f} dB", flush=True)
    frames_per_clip = quality.frames
    for name, run, _ in configs:
        per_frame = run_evaluations(cfg, run, [frames_per_clip]) / frames_per_clip
        real = run_evaluations(_real_size(), dataclasses.replace(run, size=512), [16]) / 16
        cases = rows[name]["cases"]
        rows[name] |= {
            "unet_frame_evaluations_per_frame": round(per_frame, 3),
            "real_size_unet_frame_evaluations_per_frame": round(real, 3),
            "h200_projected_frames_per_second": round(1000 / (real * H200_MS_PER_EVALUATION), 1),
            "cpu_seconds_mean": round(float(np.mean([c["seconds"] for c in cases])), 2),
            "psnr_vs_quality_mean": round(float(np.mean([c["psnr_vs_quality"] for c in cases])), 2),
            "lip_sync_r_mean": round(float(np.mean([c["lip_sync_r"] for c in cases])), 4),
            "lip_sync_r_quality_mean": round(float(np.mean([c["lip_sync_r_quality"] for c in cases])), 4)}
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python bench/speed_presets.py " + " ".join(
                  f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in vars(args).items()
                  if v not in (None, False)),
              "machine": {"processor": platform.processor() or platform.machine(), "threads": args.threads,
                          "torch": torch.__version__, "python": platform.python_version()},
              "model": cfg.name, "size": quality.size, "frames_per_clip": quality.frames,
              "h200_ms_per_unet_frame_evaluation": H200_MS_PER_EVALUATION,
              "projection": "frames/s = 1000 / (real-size evaluations per frame x 7.19 ms), decode excluded",
              "rows": rows}
    out = args.out or Path("bench/results") / f"{datetime.now():%Y-%m-%d}-cpu-speed-presets.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


def _real_size():
    from emo.config import PRESETS

    return PRESETS["hallo-sd15"].model


if __name__ == "__main__":
    raise SystemExit(main())
