"""What every console script shares: one-line errors, exit codes, loading the models a command works on."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from ..checkpoints.state_dict import CheckpointError
from ..config import PRESETS
from ..errors import InputError


def add_model_source(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--models", metavar="DIR", help="model directory in Hallo's pretrained_models layout")
    src.add_argument("--demo", action="store_true", help="the tiny seeded random model emo-run --demo uses")
    src.add_argument("--random", metavar="PRESET", choices=sorted(PRESETS),
                     help="seeded random weights of a preset (hallo-sd15: real size, for export tests)")


def load_models(args: argparse.Namespace):
    from ..runtime.models import demo_models, load_model_dir

    if args.random:
        return demo_models(cfg=PRESETS[args.random].model)
    return demo_models() if args.demo else load_model_dir(args.models)


def run_main(prog: str, body: Callable[[argparse.Namespace], int], args: argparse.Namespace,
             interrupted: str = "interrupted") -> int:
    """Run a command body: bad input -> one line and exit 2, Ctrl-C -> 130, anything else -> one line and 1
    (with --verbose, the traceback instead)."""
    verbose = getattr(args, "verbose", False)
    try:
        return body(args)
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except (InputError, CheckpointError) as e:
        if verbose:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # an unexpected failure still gets one line unless --verbose
        if verbose:
            raise
        print(f"{prog}: error: {type(e).__name__}: {e} (rerun with --verbose for details)", file=sys.stderr)
        return 1
