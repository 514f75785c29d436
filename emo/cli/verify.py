"""emo-verify: run each exported graph with ONNX Runtime (via polygraphy) and compare it with torch."""
from __future__ import annotations

import argparse
import sys

from ..config import FAMILIES
from .common import add_model_source, load_models, run_main

PROG = "emo-verify"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("engine_dir", metavar="ENGINE_DIR", help="a directory made by emo-export")
    add_model_source(p, required=False)  # the trained demo model by default
    p.add_argument("--family", choices=list(FAMILIES),
                   help="the model family (default: the export's); with --demo, EchoMimic's tiny random model")
    p.add_argument("--components", help="comma-separated subset (default: all in the directory)")
    p.add_argument("--tolerance", type=float, help="max abs error (default 1e-4 for fp32 graphs, 5e-2 for fp16)")
    p.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    return p


def _run(args: argparse.Namespace) -> int:
    from ..export.verify import verify_export
    from ..manifest import manifest_family

    components = tuple(c.strip() for c in args.components.split(",")) if args.components else None
    exported = manifest_family(args.engine_dir)
    if args.family is None and exported not in (None, "hallo"):
        args.family = exported  # an EchoMimic export: its model's family
    results = verify_export(args.engine_dir, load_models(args), components, args.tolerance)
    print(f"{'component':14s} {'point':6s} {'prec':5s} {'max abs err':>12s} {'max |ref|':>10s} {'tol':>8s}")
    for r in results:
        print(f"{r.component:14s} {r.point:6s} {r.precision:5s} {r.max_abs:12.3e} {r.max_ref:10.3g} "
              f"{r.tolerance:8.1e} {'ok' if r.ok else 'FAIL (' + r.worst_output + ')'}")
    bad = [r for r in results if not r.ok]
    if bad:
        print(f"{PROG}: {len(bad)} comparison(s) above tolerance", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, _run, _parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
