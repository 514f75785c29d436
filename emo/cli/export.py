"""emo-export: every component of a model to ONNX (one graph each) plus a manifest the runtime checks."""
from __future__ import annotations

import argparse
import sys

from ..config import FAMILIES, PRESETS
from ..io_spec import COMPONENTS, ECHOMIMIC_COMPONENTS, component_names, default_ranges, with_max_audio
from .common import add_model_source, load_models, run_main

PROG = "emo-export"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    add_model_source(p, required=False)  # the trained demo model by default
    p.add_argument("--out", required=True, metavar="ENGINE_DIR", help="output directory (created if needed)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"],
                   help="fp16 / bf16: traced in float32, then converted graph by graph (norm statistics and softmax "
                        "stay float32); bf16 graphs are for TensorRT (ONNX Runtime's CPU provider has no bf16 "
                        "kernels)")
    p.add_argument("--from-export", metavar="FP32_DIR",
                   help="convert the graphs of this fp32 export to --precision instead of exporting a model "
                        "(no weights or torch tracing needed: seconds, where tracing is minutes)")
    p.add_argument("--family", choices=list(FAMILIES),
                   help="the model family: with --demo, echomimic and echomimic-acc export a tiny random EchoMimic "
                        "model; with --models, the EchoMimic denoiser to take when the directory holds both")
    p.add_argument("--components",
                   help=f"comma-separated subset of: {', '.join(COMPONENTS)} (EchoMimic: "
                        f"{', '.join(ECHOMIMIC_COMPONENTS)}); default: all of the model's")
    p.add_argument("--ranges", choices=sorted(PRESETS),
                   help="shape ranges the graphs (and later engine profiles) cover; default: the model's preset")
    p.add_argument("--max-audio-seconds", type=float, metavar="S",
                   help="longest audio the audio encoder graph accepts (default: the ranges' own, 60 s for tiny, "
                        "120 s for hallo-sd15); it attends over the whole audio, so its memory grows with S squared")
    p.add_argument("--skip-checks", action="store_true", help="do not run the graph checks after export")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    return p


def _check_components(given: tuple[str, ...] | None, known: tuple[str, ...]) -> None:
    from ..errors import InputError

    unknown = [c for c in given or () if c not in known]
    if unknown or given == ():
        raise InputError(f"unknown component(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(dict.fromkeys(known))}")


def _run(args: argparse.Namespace) -> int:
    from ..export.exporter import export_models

    given = None if args.components is None else tuple(c.strip() for c in args.components.split(",") if c.strip())
    _check_components(given, (*COMPONENTS, *ECHOMIMIC_COMPONENTS))  # names first, before the (slow) load
    say = (lambda *a: None) if args.quiet else print
    if args.from_export:
        return _convert(args, given, say)
    models = load_models(args)
    known = component_names(models.cfg)
    _check_components(given, known)
    components = given or known
    ranges = PRESETS[args.ranges].ranges if args.ranges else None
    if args.max_audio_seconds is not None:
        ranges = with_max_audio(ranges or default_ranges(models.cfg), args.max_audio_seconds)

    manifest = export_models(models, args.out, args.precision, ranges, components, _reporter(say))
    return 0 if args.skip_checks else _check(args.out, manifest, components, say)


def _reporter(say):
    """One line per graph written (exported or converted)."""
    def done(g) -> None:
        say(f"{g.name:14s} {g.bytes / 2**20:9.1f} MiB {g.seconds:7.1f} s  {g.file}"
            + (f" + {g.data_file}" if g.data_file else ""))

    return done


def _convert(args: argparse.Namespace, given: tuple[str, ...] | None, say) -> int:
    from ..errors import InputError
    from ..export.convert import convert_export

    model_options = [o for o, v in (("--models", args.models), ("--demo", args.demo), ("--random", args.random),
                                    ("--ranges", args.ranges), ("--max-audio-seconds", args.max_audio_seconds),
                                    ("--family", args.family)) if v]
    if model_options:
        raise InputError(f"--from-export converts graphs as they are; {', '.join(model_options)} does not apply")
    if args.precision == "fp32":
        raise InputError("--from-export converts to --precision fp16 or bf16; the source is already fp32")
    manifest = convert_export(args.from_export, args.out, args.precision, given, _reporter(say))
    return 0 if args.skip_checks else _check(args.out, manifest, tuple(manifest.components), say)


def _check(out: str, manifest, components: tuple[str, ...], say) -> int:
    from ..export.checks import QDQ_OPS, TRT10_OPS, check_graph

    failed = 0
    for name in components:
        allowed = TRT10_OPS | QDQ_OPS if manifest.quantization else TRT10_OPS  # INT8/FP8 exports: Q/DQ nodes
        report = check_graph(f"{out}/{manifest.components[name].file}", allowed)
        if not report.ok:
            failed += 1
            print(f"{PROG}: {name}: " + "; ".join(report.problems), file=sys.stderr)
    if failed:
        print(f"{PROG}: {failed} graph(s) failed the checks", file=sys.stderr)
        return 1
    say(f"{PROG}: wrote {len(components)} graph(s) and manifest.json to {out} (checks passed)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, _run, _parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
