"""emo-run: portrait image + voice -> MP4 of that person talking or singing (H.264 + the original audio)."""
from __future__ import annotations

import argparse
import re
import sys
from importlib import resources
from pathlib import Path

from ..config import PRESETS, RunConfig
from ..errors import InputError
from ..runtime.renderer import check_outputs
from ..validation import check_face_expand_ratio, check_seed
from .common import run_main
from .progress import ProgressLine

PROG = "emo-run"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("image", nargs="?", help="portrait image (PNG, JPEG, WebP, ...)")
    p.add_argument("audio", nargs="?", help="voice track (WAV, MP3, M4A, FLAC, OGG, or a video's audio)")
    p.add_argument("-o", "--output", required=True, help="output .mp4")
    add_renderer_options(p, demo_help="tiny random model (or, with --engine-dir, its export) and demo settings; "
                                      "built-in image and voice unless IMAGE and AUDIO are given")
    add_run_options(p)
    p.add_argument("--frames-out", metavar="PATH.npy", help="also save the raw float frames (f, H, W, 3)")
    p.add_argument("--quiet", action="store_true", help="no progress or summary")
    p.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    return p


def add_renderer_options(p: argparse.ArgumentParser, demo_help: str) -> None:
    """The options that choose and load a renderer (emo-run and emo-serve share them)."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--models", metavar="DIR", help="model directory in Hallo's pretrained_models layout")
    src.add_argument("--demo", action="store_true", help=demo_help)
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "torch-fast", "onnxruntime", "tensorrt"],
                   help="auto: with --engine-dir, tensorrt for emo-build-engine plans (on a GPU) or onnxruntime "
                        "for emo-export graphs; else torch-fast on a CUDA GPU, else torch")
    p.add_argument("--engine-dir", metavar="DIR",
                   help="graphs made by emo-export (onnxruntime) or plans made by emo-build-engine (tensorrt)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"],
                   help="torch: fp32 (default), fp16 or bf16; onnxruntime: must match the exported graphs")
    p.add_argument("--face-expand-ratio", type=float, default=1.2, help="face-region box scale (Hallo: 1.2)")
    p.add_argument("--face-models", metavar="DIR",
                   help="InsightFace ONNX models (SCRFD detector, ArcFace embedding) to use instead of OpenCV's "
                        "detector and the stand-in embedding; default: DIR/face_analysis of --models when present")
    p.add_argument("--separate-vocals", nargs="?", const="", metavar="MODEL.onnx",
                   help="separate the voice from music first with an MDX-Net ONNX model (default with --models: "
                        "DIR/audio_separator/Kim_Vocal_2.onnx); the video keeps the original audio")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The per-render settings (emo-serve takes the same ones, with the same defaults, as form fields)."""
    d, demo = PRESETS["hallo-sd15"].run, PRESETS["tiny"].run
    p.add_argument("--steps", type=int, help=f"denoising steps (default {d.steps}; demo {demo.steps})")
    p.add_argument("--guidance-scale", type=float, default=d.guidance_scale)
    p.add_argument("--fps", type=int, default=d.fps)
    p.add_argument("--size", type=int, help=f"output side in pixels, a multiple of 64 (default {d.size}; "
                                            f"demo {demo.size})")
    p.add_argument("--frames-per-clip", type=int, default=d.frames)
    p.add_argument("--motion-frames", type=int, default=d.motion_frames)
    p.add_argument("--seed", type=int, default=42)


def _vocal_model(args: argparse.Namespace) -> str | None:
    if args.separate_vocals is None:
        return None
    if args.separate_vocals:
        return args.separate_vocals
    if not args.models:
        raise InputError("--separate-vocals needs MODEL.onnx (or --models DIR with audio_separator/Kim_Vocal_2.onnx)")
    return str(Path(args.models) / "audio_separator" / "Kim_Vocal_2.onnx")


DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
FAST_DTYPES = (None, "fp16", "bf16")  # torch-fast runs half precision only


def _backend(args: argparse.Namespace) -> str:
    """auto: with --engine-dir, tensorrt for emo-build-engine plans or onnxruntime for emo-export graphs;
    torch-fast on a CUDA GPU when the dtype is half precision (or not given); eager torch otherwise."""
    if args.backend != "auto":
        return args.backend
    if args.engine_dir:
        from ..manifest import manifest_format

        return "tensorrt" if manifest_format(args.engine_dir) == "tensorrt" else "onnxruntime"
    import torch

    gpu = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    return "torch-fast" if gpu and args.dtype in FAST_DTYPES else "torch"


def _check_device(args: argparse.Namespace, backend: str) -> None:
    """A device the backend can use, checked before anything is loaded. onnxruntime checks its own CUDA provider."""
    if not DEVICE.fullmatch(args.device):
        raise InputError(f"unknown device {args.device!r} (auto, cpu, cuda or cuda:N)")
    if backend == "torch-fast" and args.device == "cpu":
        raise InputError("--backend torch-fast runs on a CUDA GPU (use --backend torch on the CPU)")
    import torch

    if backend != "onnxruntime" and args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {args.device}: no CUDA GPU is available (use --device cpu)")
        index = int(args.device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise InputError(f"--device {args.device}: there is no CUDA GPU {index} "
                             f"({torch.cuda.device_count()} available)")
    if backend == "torch-fast" and not torch.cuda.is_available():
        raise InputError("--backend torch-fast needs a CUDA GPU, and none is available (use --backend torch)")
    if backend == "torch-fast" and args.dtype not in FAST_DTYPES:
        raise InputError("--backend torch-fast runs fp16 or bf16 (use --backend torch for fp32)")


def face_models_of(args: argparse.Namespace) -> str | None:
    """--face-models, else DIR/face_analysis of --models when present."""
    from ..preprocess.face_models import default_face_models

    return args.face_models or (default_face_models(args.models) if args.models else None)


def build_renderer(args: argparse.Namespace):
    """The Renderer that add_renderer_options' arguments ask for; the backend and device are checked before anything
    is loaded."""
    from ..runtime.models import demo_models, load_model_dir
    from ..runtime.renderer import Renderer

    check_face_expand_ratio(args.face_expand_ratio)
    backend = _backend(args)
    _check_device(args, backend)
    pre = dict(face_expand_ratio=args.face_expand_ratio, face_models=face_models_of(args),
               vocal_separator=_vocal_model(args))
    if backend == "onnxruntime":
        if not args.engine_dir:
            raise InputError("--backend onnxruntime needs --engine-dir DIR (make one with emo-export)")
        if args.models:
            raise InputError("the onnxruntime backend reads its weights from --engine-dir; drop --models")
        renderer = Renderer.from_engine_dir(args.engine_dir, "cpu" if args.device == "auto" else args.device, **pre)
        exported = renderer.backend.manifest.precision
        if args.dtype not in (None, exported):
            raise InputError(f"{args.engine_dir} holds {exported} graphs; --dtype {args.dtype} needs another export")
        return renderer
    if backend == "tensorrt":
        from ..runtime.tensorrt_backend import TensorRTBackend

        if not args.engine_dir:
            raise InputError("--backend tensorrt needs --engine-dir DIR (make one with emo-build-engine)")
        if args.models:
            raise InputError("the tensorrt backend reads its weights from --engine-dir; drop --models")
        return Renderer(TensorRTBackend(args.engine_dir, "cuda" if args.device == "auto" else args.device), **pre)
    if args.engine_dir:
        raise InputError("--engine-dir is for the onnxruntime and tensorrt backends")
    if not (args.models or args.demo):
        raise InputError("give --models DIR (or --demo, or --engine-dir DIR)")
    if backend == "torch-fast":
        models = demo_models() if args.demo else load_model_dir(args.models)
        return Renderer.fast(models, "cuda" if args.device == "auto" else args.device, args.dtype or "fp16", **pre)
    if args.demo:
        return Renderer.demo(device=args.device, dtype=args.dtype or "fp32", **pre)
    return Renderer.from_model_dir(args.models, device=args.device, dtype=args.dtype or "fp32", **pre)


def run_config(args: argparse.Namespace) -> RunConfig:
    """add_run_options' arguments (steps and size default to the demo's with --demo) -> checked settings."""
    preset = PRESETS["tiny" if args.demo else "hallo-sd15"].run
    run = RunConfig(frames=args.frames_per_clip, motion_frames=args.motion_frames,
                    steps=args.steps if args.steps is not None else preset.steps,
                    guidance_scale=args.guidance_scale, size=args.size if args.size is not None else preset.size,
                    fps=args.fps)
    run.validate()
    check_seed(args.seed)
    return run


def _settings(args: argparse.Namespace) -> tuple[RunConfig, str, str]:
    """Every option and path checked in one place, before anything is loaded -> (run settings, image, audio)."""
    run = run_config(args)
    check_face_expand_ratio(args.face_expand_ratio)
    if (args.image is None) != (args.audio is None):
        raise InputError("give both IMAGE and AUDIO, or neither with --demo")
    image, audio = args.image, args.audio
    if image is None:
        if not args.demo:
            raise InputError("IMAGE and AUDIO are required (or use --demo)")
        assets = resources.files("emo") / "assets"
        image, audio = str(assets / "portrait.jpg"), str(assets / "speech.wav")
    check_outputs(args.output, args.frames_out, image, audio, names=("-o", "--frames-out"))
    return run, image, audio


def _run(args: argparse.Namespace) -> int:
    run, image, audio = _settings(args)
    renderer = build_renderer(args)
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
              f"in {result.seconds:.1f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, _run, _parser().parse_args(argv), interrupted="interrupted; no output written")


if __name__ == "__main__":
    sys.exit(main())
