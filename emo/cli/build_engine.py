"""emo-build-engine: TensorRT engines (one plan per component) from an emo-export directory."""
from __future__ import annotations

import argparse
import sys

from ..io_spec import COMPONENTS, ECHOMIMIC_COMPONENTS
from .common import run_main

PROG = "emo-build-engine"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("export_dir", metavar="EXPORT_DIR", help="graphs made by emo-export")
    p.add_argument("--out", required=True, metavar="ENGINE_DIR", help="output directory (created if needed)")
    p.add_argument("--flavour", default="auto", choices=["auto", "tensorrt", "tensorrt-rtx"],
                   help="classic TensorRT (builds on the target GPU) or TensorRT for RTX (builds ahead of time, "
                        "no GPU needed); auto: the one installed, classic first")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8", "fp8"],
                   help="default: the export's (strongly typed); fp16/bf16 of an fp32 export: classic TensorRT's "
                        "builder flags; int8/fp8: graphs with Q/DQ nodes")
    p.add_argument("--target", metavar="SM,...",
                   help="compute capabilities to build for (tensorrt-rtx: default sm_80,sm_86,sm_89,sm_120,sm_121; "
                        "tensorrt: the GPU it runs on)")
    p.add_argument("--components",
                   help=f"comma-separated subset of: {', '.join(COMPONENTS)} (EchoMimic: "
                        f"{', '.join(ECHOMIMIC_COMPONENTS)}); default: all of the export's model family")
    p.add_argument("--workspace", type=float, metavar="GiB",
                   help="cap on the device memory the engine may use (TensorRT's workspace pool; default: "
                        "TensorRT's, 64 GiB with TensorRT for RTX)")
    p.add_argument("--max-memory", type=float, metavar="GiB",
                   help="memory a build may use (default: what is available when it starts); a component that "
                        "would need more is refused before any build starts")
    p.add_argument("--frames", metavar="LO:HI",
                   help="clip lengths the profiles cover (default: the export's minimum up to the run preset's clip, "
                        "16 for hallo-sd15)")
    p.add_argument("--size", metavar="LO:HI",
                   help="frame sizes the profiles cover (default: the run preset's, 512 for hallo-sd15)")
    p.add_argument("--full-range", action="store_true",
                   help="profiles over every shape the export allows (needs far more build memory)")
    p.add_argument("--opt-level", type=int, default=3, choices=range(6), metavar="0-5",
                   help="builder optimisation level (0: fastest build; default 3)")
    p.add_argument("--opt-point", action="append", default=[], metavar="FRAMES,MOTION,SIZE",
                   help="add an optimisation profile tuned for this clip length, motion frames and size "
                        "(repeatable; the export's own opt point is always profile 0)")
    p.add_argument("--refittable", action="store_true",
                   help="build refittable plans (new weights of the same model need no rebuild)")
    p.add_argument("--refit", action="store_true",
                   help="instead of building: write EXPORT_DIR's weights into the refittable plans of --out "
                        "(same model config; needs a GPU the plans target)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--verbose", action="store_true", help="TensorRT warnings; tracebacks on errors")
    return p


def _point(text: str) -> tuple[int, int, int]:
    from ..errors import InputError

    try:
        f, n, size = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--opt-point wants FRAMES,MOTION,SIZE (e.g. 16,2,512), not {text!r}") from None
    return f, n, size


def _run(args: argparse.Namespace) -> int:
    from ..engine.build_ranges import parse_span
    from ..engine.engine_dir import EngineSettings, build_engine_dir
    from ..engine.refit import refit_engine_dir
    from ..errors import InputError
    from ..tensorrt.flavours import parse_sm

    say = (lambda *a, **k: None) if args.quiet else print
    if args.refit:
        m = refit_engine_dir(args.export_dir, args.out, lambda name: say(f"{name:14s} refitted", flush=True))
        say(f"{PROG}: refitted {len(m.components)} plan(s) in {args.out} with the weights of {args.export_dir}")
        return 0
    components = None
    if args.components is not None:
        known = (*COMPONENTS, *(c for c in ECHOMIMIC_COMPONENTS if c not in COMPONENTS))
        components = tuple(c.strip() for c in args.components.split(",") if c.strip())
        unknown = [c for c in components if c not in known]
        if unknown or not components:
            raise InputError(f"unknown component(s) {', '.join(unknown) or '(none given)'}; "
                             f"choose from {', '.join(known)}")
    for option, value in (("--workspace", args.workspace), ("--max-memory", args.max_memory)):
        if value is not None and not value > 0:
            raise InputError(f"{option} must be > 0 GiB")
    settings = EngineSettings(
        flavour=args.flavour, precision=args.precision,
        targets=tuple(parse_sm(t) for t in args.target.split(",") if t.strip()) if args.target else (),
        points=tuple(_point(p) for p in args.opt_point), optimization_level=args.opt_level,
        workspace_gib=args.workspace, refittable=args.refittable,
        frames=parse_span(args.frames, "frames") if args.frames else None,
        size=parse_span(args.size, "size") if args.size else None,
        full_range=args.full_range, max_memory_gib=args.max_memory)

    def done(b) -> None:
        say(f"{b.name:14s} {b.bytes / 2**20:9.1f} MiB {b.seconds:7.1f} s  peak RSS {b.peak_rss_mib / 1024:5.1f} GiB"
            f"  {b.file}", flush=True)

    m = build_engine_dir(args.export_dir, args.out, settings, components, done, echo=args.verbose)
    e = m.engine
    say(f"{PROG}: wrote {len(components or m.components)} plan(s) and manifest.json to {args.out} "
        f"({e['flavour']} {e['version']}, {m.precision}, {', '.join(e['targets'])})")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, _run, _parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
