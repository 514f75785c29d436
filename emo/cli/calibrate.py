"""emo-calibrate: an INT8 or FP8 export (Q/DQ ONNX graphs + manifest) calibrated on real renders, with an
accuracy gate against fp32 on held-out inputs."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ..config import PRESETS, RunConfig, RunOptions
from .common import add_model_source, load_models, run_main

PROG = "emo-calibrate"
GATE_FAILED = 3  # exit status when the accuracy gate stops the build


def _parser() -> argparse.ArgumentParser:
    from ..calibration.gate import DEFAULT_MIN_PSNR_DB
    from ..calibration.policy import FORMATS, POLICIES

    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    add_model_source(p, required=False)  # the trained demo model by default: its gate numbers mean something
    p.add_argument("--precision", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, metavar="ENGINE_DIR", help="output export directory (replaced if it "
                                                                       "holds an export)")
    p.add_argument("--calibration", metavar="DIR", help="folder of image + audio pairs with the same name "
                                                        "(default: the demo portrait and voice and variations)")
    p.add_argument("--accept-accuracy-loss", action="store_true", help="write the export even below the gate")
    p.add_argument("--min-psnr", type=float, default=DEFAULT_MIN_PSNR_DB, metavar="DB",
                   help="the gate: PSNR of held-out frames vs fp32 (default %(default)s)")
    p.add_argument("--policy", default="default", choices=sorted(POLICIES),
                   help="what is quantized (default: the UNets without time embedding, first/last conv, audio path)")
    p.add_argument("--keep", action="append", default=[], metavar="GLOB",
                   help="also keep ONNX nodes matching GLOB in high precision (repeatable)")
    p.add_argument("--components", help="comma-separated graphs to quantize (default: the policy's)")
    p.add_argument("--seconds", type=float, default=1.0, help="voice length rendered per input (default 1.0)")
    p.add_argument("--steps", type=int, help="denoising steps of the calibration renders (default: the preset's)")
    p.add_argument("--size", type=int, help="frame side of the calibration renders (default: the preset's)")
    p.add_argument("--frames-per-clip", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-scales", metavar="FILE",
                   help="with --precision fp8: also write the FP8 scales of the torch-fast step (emo-run --backend "
                        "torch-fast --fp8-scales FILE) from the same calibration")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    return p


def _run_config(args: argparse.Namespace, model_name: str) -> RunConfig:
    preset = PRESETS.get(model_name, PRESETS["hallo-sd15"])
    return RunOptions(frames=args.frames_per_clip, steps=args.steps, size=args.size).apply(preset.run, preset.model)


def _run(args: argparse.Namespace) -> int:
    from ..calibration.build import CalibrationSettings, GateFailed, check_out_dir, quantize_export
    from ..calibration.media_set import CALIBRATION_VARIATIONS, HELD_OUT_VARIATIONS, folder_pairs, generated_pairs
    from ..calibration.policy import POLICIES
    from ..errors import InputError
    from ..export.exporter import export_models

    say = (lambda s: None) if args.quiet else print
    out = Path(args.out)
    check_out_dir(out)
    if args.seconds <= 0:
        raise InputError("--seconds must be > 0")
    if args.torch_scales and args.precision != "fp8":
        raise InputError("--torch-scales is for --precision fp8 (the torch step's FP8 matmuls)")
    if args.torch_scales and not Path(args.torch_scales).resolve().parent.is_dir():
        raise InputError(f"--torch-scales {args.torch_scales}: its directory does not exist")
    if args.torch_scales and Path(args.torch_scales).is_dir():
        raise InputError(f"--torch-scales {args.torch_scales} is a directory; give a file name")
    policy = POLICIES[args.policy].with_keep(tuple(args.keep))
    if args.components:
        policy = policy.with_components(tuple(c.strip() for c in args.components.split(",") if c.strip()))
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.is_dir() else None,
                                     prefix=f".{out.name}.work-") as tmp:
        work = Path(tmp)
        if args.calibration:
            calibration = folder_pairs(Path(args.calibration), work / "calibration", args.seconds)
        else:
            calibration = generated_pairs(CALIBRATION_VARIATIONS, work / "calibration", args.seconds)
        held_out = generated_pairs(HELD_OUT_VARIATIONS, work / "held_out", args.seconds)
        models = load_models(args)
        run = _run_config(args, models.cfg.name)
        say(f"exporting the fp32 graphs of {models.cfg.name}")
        export_models(models, work / "fp32", "fp32")
        keys = _denoiser_keys(models) if args.torch_scales else None
        del models
        settings = CalibrationSettings(run, args.seed, args.min_psnr, args.accept_accuracy_loss,
                                       extra={"seconds": args.seconds})
        try:
            m = quantize_export(work / "fp32", out, args.precision, policy, calibration, held_out, settings, say)
        except GateFailed as e:
            print(f"{PROG}: accuracy gate: {e}", file=sys.stderr)
            return GATE_FAILED
        if keys is not None:
            _write_torch_scales(Path(args.torch_scales), work / "fp32", out, keys, policy, say)
    gate = m.quantization["gate"]
    say(f"{PROG}: wrote {args.precision} export to {out}: held-out frames {gate['frames']['psnr_db']:.1f} dB PSNR "
        f"vs fp32 (gate {gate['min_psnr_db']:g} dB{', accepted below it' if gate['accepted_loss'] else ''})")
    for variant, scores in gate["lip_sync_r"].items():
        say(f"  lip-sync r ({variant}): " + ", ".join(f"{r:.3f}" for r in scores))
    for name, e in gate["components"].items():
        say(f"  {name:10s} max |err| {e['max_abs']:.3g} (output up to {e['max_ref']:.3g}), mean {e['mean_abs']:.3g},"
            f" cosine {e['cosine']:.5f}")
    return 0


def _denoiser_keys(models) -> dict[str, str]:
    from ..calibration.torch_scales import module_keys
    from ..errors import InputError

    if models.cfg.family != "hallo":
        raise InputError("--torch-scales: the torch-fast step runs Hallo models")
    return module_keys(models.net.denoising_unet)


def _write_torch_scales(path: Path, fp32_dir: Path, out: Path, keys: dict[str, str], policy, say) -> None:
    """The torch step's scales from the denoiser ranges the calibration recorded (written to a temporary name,
    renamed when complete)."""
    import json

    from ..calibration.build import CALIBRATION_FILE
    from ..calibration.torch_scales import scales_from_graph
    from ..errors import InputError

    record = json.loads((out / CALIBRATION_FILE).read_text())["components"]
    if "denoiser" not in record:
        raise InputError("--torch-scales needs the denoiser among the quantized components")
    matched = scales_from_graph(fp32_dir / "denoiser.onnx", record["denoiser"]["amax"], keys, policy)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(matched.scales.to_json(), indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    say(f"{PROG}: wrote torch-fast FP8 scales of {matched.matched} layers to {path}"
        + (f" ({len(matched.unmatched)} graph layers without a module of the same weight)" if matched.unmatched
           else ""))


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, _run, _parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
