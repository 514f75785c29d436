"""emo-run: portrait image + voice -> MP4 of that person talking or singing (H.264 + the original audio)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from importlib import resources
from pathlib import Path

from ..config import FAMILIES, PRESETS, SAMPLERS, SPEEDS, RunConfig, RunOptions, parse_interval
from ..errors import InputError
from ..runtime.factory import BACKENDS, RendererSpec, build_renderer
from ..runtime.renderer import check_backend_runs, check_outputs
from ..validation import DEFAULT_SEED, check_seed
from .common import run_main
from .progress import ProgressLine

PROG = "emo-run"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("image", nargs="?", help="portrait image (PNG, JPEG, WebP, ...)")
    p.add_argument("audio", nargs="?", help="voice track (WAV, MP3, M4A, FLAC, OGG, or a video's audio)")
    p.add_argument("-o", "--output", required=True, help="output .mp4")
    add_renderer_options(p, demo_help="the trained demo model (or, with --engine-dir, its export) at its settings; "
                                      "the built-in portrait and voice unless IMAGE and AUDIO are given")
    add_run_options(p)
    p.add_argument("--frames-out", metavar="PATH.npy", help="also save the raw float frames (f, H, W, 3)")
    p.add_argument("--stats", metavar="FILE.json",
                   help="write what the render did: frames, seconds, time to first frame, UNet frame-evaluations "
                        "(in total and per frame), the settings, backend and device")
    p.add_argument("--quiet", action="store_true", help="no progress or summary")
    p.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    return p


def add_renderer_options(p: argparse.ArgumentParser, demo_help: str) -> None:
    """The options that choose and load a renderer (emo-run and emo-serve share them)."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--models", metavar="DIR", help="model directory in Hallo's pretrained_models layout")
    src.add_argument("--demo", action="store_true", help=demo_help)
    p.add_argument("--backend", default="auto", choices=["auto", *BACKENDS],
                   help="auto: with --engine-dir, tensorrt for a plan directory (on a GPU) or onnxruntime for an "
                        "export directory; else torch-fast on a CUDA GPU, else torch")
    p.add_argument("--engine-dir", metavar="DIR",
                   help="an export directory made by emo-export (onnxruntime) or a plan directory made by "
                        "emo-build-engine (tensorrt)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"],
                   help="torch: fp32 (default), fp16 or bf16; onnxruntime: must match the exported graphs")
    p.add_argument("--compile", nargs="?", const="graph", choices=["graph", "reduce-overhead"],
                   help="torch-fast: the denoising step through torch.compile (inductor; cache in "
                        "$XDG_CACHE_HOME/emo-runtime/inductor or $EMO_INDUCTOR_CACHE), inside torch-fast's CUDA graph "
                        "(graph, the default) or in inductor's own (reduce-overhead); q/k/v in one GEMM")
    p.add_argument("--fp8-scales", metavar="FILE",
                   help="torch-fast: the denoiser's linear layers in FP8 (GPUs with compute capability >= 8.9), "
                        "activation scales from FILE (emo.calibration.linear_amax)")
    p.add_argument("--face-expand-ratio", type=float, default=1.2, help="face-region box scale (Hallo: 1.2)")
    p.add_argument("--face-models", metavar="DIR",
                   help="InsightFace ONNX models (SCRFD detector, ArcFace embedding) to use instead of OpenCV's "
                        "detector and the stand-in embedding; default: DIR/face_analysis of --models when present")
    p.add_argument("--family", choices=list(FAMILIES),
                   help="the model family: hallo, echomimic (30 steps, guidance 2.5) or echomimic-acc (its "
                        "accelerated model: 6 steps, no guidance); needed only where the model directory holds both "
                        "EchoMimic models. With --demo, echomimic and echomimic-acc run a tiny model of that family "
                        "with random weights (its video is noise: a check of the pipeline, not a demo of quality)")
    p.add_argument("--separate-vocals", nargs="?", const="", metavar="MODEL.onnx",
                   help="separate the voice from music first with an MDX-Net ONNX model (default with --models: "
                        "DIR/audio_separator/Kim_Vocal_2.onnx); the video keeps the original audio")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The per-render settings (emo-serve takes the same ones, with the same defaults, as form fields)."""
    d, demo = PRESETS["hallo-sd15"].run, PRESETS["demo"].run

    def default(name: str) -> str:
        a, b = getattr(d, name), getattr(demo, name)
        return f"(default {a}{'' if a == b else f'; demo {b}'})"

    p.add_argument("--speed", choices=list(SPEEDS),
                   help="a speed preset: quality is Hallo's settings (40 guided DDIM steps); balanced, fast and "
                        "realtime cost fewer UNet evaluations a frame (docs/performance.md has each one's measured "
                        "fidelity); the options below override a preset's settings (default: the model's preset)")
    p.add_argument("--steps", type=int, help=f"denoising steps {default('steps')}")
    p.add_argument("--guidance-scale", type=float, help=f"classifier-free guidance scale {default('guidance_scale')}")
    p.add_argument("--fps", type=int, help=f"frames per second {default('fps')}")
    p.add_argument("--size", type=int, help=f"output side in pixels, a multiple of 64 {default('size')}")
    p.add_argument("--frames-per-clip", type=int, help=f"frames a clip {default('frames')}")
    p.add_argument("--motion-frames", type=int, help=f"motion frames {default('motion_frames')}")
    p.add_argument("--sampler", choices=list(SAMPLERS), help="ddim (Hallo's, default) or dpm++ (DPM-Solver++ 2M)")
    p.add_argument("--guidance-interval", metavar="START:END", type=_interval,
                   help="guide only the steps in this part of the schedule (fractions, e.g. 0:0.5); the others run "
                        "the conditional half alone, at half the cost (default 0:1, every step)")
    p.add_argument("--cache-interval", type=int,
                   help="run the full UNet every N steps and only its outer level between, reusing the deep "
                        "features (DeepCache; torch and torch-fast backends; default 1: off)")
    p.add_argument("--first-clip-frames", type=int,
                   help="a shorter first clip, so that the first frames come out sooner (default: frames per clip)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"initial noise (default {DEFAULT_SEED})")


def _interval(text: str) -> tuple[float, float]:
    try:
        return parse_interval(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def renderer_spec(args: argparse.Namespace) -> RendererSpec:
    """add_renderer_options' arguments -> the spec the factory builds from."""
    return RendererSpec(models=args.models, engine_dir=args.engine_dir, demo=bool(args.demo), backend=args.backend,
                        device=args.device, dtype=args.dtype, face_models=args.face_models,
                        separate_vocals=args.separate_vocals, face_expand_ratio=args.face_expand_ratio,
                        family=args.family, compile=args.compile, fp8_scales=args.fp8_scales)


def run_options(args: argparse.Namespace) -> RunOptions:
    """add_run_options' arguments -> overrides of the model's preset settings."""
    return RunOptions(speed=args.speed, steps=args.steps, guidance_scale=args.guidance_scale, fps=args.fps,
                      size=args.size, frames=args.frames_per_clip, motion_frames=args.motion_frames,
                      sampler=args.sampler, guidance_interval=args.guidance_interval,
                      cache_interval=args.cache_interval, first_clip_frames=args.first_clip_frames)


def _settings(args: argparse.Namespace, spec: RendererSpec) -> tuple[RunConfig, str, str]:
    """Every option and path checked in one place, before anything is loaded -> (run settings, image, audio)."""
    spec.check()
    run = run_options(args).apply(spec.preset_run())
    if spec.model_family() != "hallo":
        from ..runtime.echo_renderer import echo_run_problem

        problem = echo_run_problem(run, args.speed)
        if problem:
            raise InputError(problem)
    check_seed(args.seed)
    if (args.image is None) != (args.audio is None):
        raise InputError("give both IMAGE and AUDIO, or neither with --demo")
    image, audio = args.image, args.audio
    if image is None:
        if not args.demo:
            raise InputError("IMAGE and AUDIO are required (or use --demo)")
        assets = resources.files("emo") / "assets"
        image, audio = str(assets / "portrait.jpg"), str(assets / "speech.wav")
    check_outputs(args.output, args.frames_out, image, audio, names=("-o", "--frames-out", "--stats"),
                  stats=args.stats)
    check_backend_runs(spec.resolved_backend(), run)
    return run, image, audio


def _run(args: argparse.Namespace) -> int:
    spec = renderer_spec(args)
    run, image, audio = _settings(args, spec)
    renderer = build_renderer(spec)
    progress = ProgressLine() if not args.quiet else None
    try:
        result = renderer.render(image, audio, args.output, run, seed=args.seed, frames_out=args.frames_out,
                                 progress=progress)
    finally:
        if progress is not None:
            progress.close()
    if not args.quiet:
        if result.faces_found > 1:
            x0, y0, x1, y1 = (round(v) for v in result.face_box)
            print(f"{PROG}: note: {result.faces_found} faces found, used the largest "
                  f"(box {x0},{y0} to {x1},{y1} in the image)", file=sys.stderr)
        print(f"{PROG}: wrote {result.path} ({result.frames} frames, {result.frames / run.fps:.2f}s) "
              f"in {result.seconds:.1f}s, {result.unet_evaluations_per_frame:.1f} UNet evaluations a frame")
    if args.stats:
        write_stats(args.stats, result, run, args.speed, renderer)
    return 0


def write_stats(path: str, result, run: RunConfig, speed: str | None, renderer) -> None:
    """What the render did, as JSON, written whole (a temporary name, then renamed)."""
    be = renderer.backend
    stats = {"frames": result.frames, "seconds": round(result.seconds, 3),
             "frames_per_second": round(result.frames / result.seconds, 3) if result.seconds else None,
             "first_frame_seconds": round(result.first_frame_seconds, 3),
             "unet_frame_evaluations": round(result.unet_evaluations, 3),
             "unet_frame_evaluations_per_frame": round(result.unet_evaluations_per_frame, 3),
             "settings": {"speed": speed, **dataclasses.asdict(run)},
             "backend": be.name, "device": str(be.device), "precision": be.precision, "model": renderer.cfg.name}
    target = Path(path)
    tmp = target.with_name(f".{target.name}.partial")
    tmp.write_text(json.dumps(stats, indent=1) + "\n")
    tmp.replace(target)


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, _run, _parser().parse_args(argv), interrupted="interrupted; no output written")


if __name__ == "__main__":
    sys.exit(main())
