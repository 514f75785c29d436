"""emo-run: portrait image + voice -> MP4 of that person talking or singing (H.264 + the original audio)."""
from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from ..checkpoints.state_dict import CheckpointError
from ..config import RUN_PRESETS, RunConfig
from ..errors import InputError
from .progress import ProgressLine

PROG = "emo-run"


def _parser() -> argparse.ArgumentParser:
    d = RUN_PRESETS["hallo-sd15"]
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("image", nargs="?", help="portrait image (PNG, JPEG, WebP, ...)")
    p.add_argument("audio", nargs="?", help="voice track (WAV, MP3, M4A, FLAC, OGG, or a video's audio)")
    p.add_argument("-o", "--output", required=True, help="output .mp4")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--models", metavar="DIR", help="model directory in Hallo's pretrained_models layout")
    src.add_argument("--demo", action="store_true",
                     help="tiny random model; built-in image and voice unless IMAGE and AUDIO are given")
    p.add_argument("--steps", type=int, help=f"denoising steps (default {d.steps}; demo {RUN_PRESETS['tiny'].steps})")
    p.add_argument("--guidance-scale", type=float, default=d.guidance_scale)
    p.add_argument("--fps", type=int, default=d.fps)
    p.add_argument("--size", type=int, help=f"output side in pixels, a multiple of 64 (default {d.size}; "
                                            f"demo {RUN_PRESETS['tiny'].size})")
    p.add_argument("--frames-per-clip", type=int, default=d.frames)
    p.add_argument("--motion-frames", type=int, default=d.motion_frames)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--face-expand-ratio", type=float, default=1.2, help="face-region box scale (Hallo: 1.2)")
    p.add_argument("--frames-out", metavar="PATH.npy", help="also save the raw float frames (f, H, W, 3)")
    p.add_argument("--quiet", action="store_true", help="no progress or summary")
    p.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    return p


def _run(args: argparse.Namespace) -> int:
    from ..runtime.renderer import Renderer

    preset = RUN_PRESETS["tiny" if args.demo else "hallo-sd15"]
    run = RunConfig(frames=args.frames_per_clip, motion_frames=args.motion_frames,
                    steps=args.steps if args.steps is not None else preset.steps,
                    guidance_scale=args.guidance_scale, size=args.size if args.size is not None else preset.size,
                    fps=args.fps)
    run.validate()
    if (args.image is None) != (args.audio is None):
        raise InputError("give both IMAGE and AUDIO, or neither with --demo")
    image, audio = args.image, args.audio
    if image is None:
        if not args.demo:
            raise InputError("IMAGE and AUDIO are required (or use --demo)")
        assets = resources.files("emo") / "assets"
        image, audio = str(assets / "portrait.jpg"), str(assets / "speech.wav")
    kw = dict(device=args.device, dtype=args.dtype, face_expand_ratio=args.face_expand_ratio)
    renderer = Renderer.demo(args.seed, **kw) if args.demo else Renderer.from_model_dir(args.models, **kw)
    progress = ProgressLine() if not args.quiet else None
    try:
        result = renderer.render(image, audio, args.output, run, seed=args.seed, frames_out=args.frames_out,
                                 progress=progress)
    finally:
        if progress is not None:
            progress.close()
    if not args.quiet:
        if result.faces_found > 1:
            print(f"{PROG}: note: {result.faces_found} faces found, used the largest", file=sys.stderr)
        print(f"{PROG}: wrote {result.path} ({result.frames} frames, {result.frames / run.fps:.2f}s) "
              f"in {result.seconds:.1f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no output written", file=sys.stderr)
        return 130
    except (InputError, CheckpointError) as e:
        if args.verbose:
            raise
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # an unexpected failure still gets one line unless --verbose
        if args.verbose:
            raise
        print(f"{PROG}: error: {type(e).__name__}: {e} (rerun with --verbose for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
