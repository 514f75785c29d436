"""What every console script shares: one-line errors, exit codes, loading the models a command works on."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from ..checkpoints.state_dict import CheckpointError
from ..config import PRESETS
from ..errors import InputError


def add_model_source(p: argparse.ArgumentParser, required: bool = True) -> None:
    """--models / --demo / --random; not required: the demo model when none is given."""
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument("--models", metavar="DIR", help="model directory in Hallo's pretrained_models layout")
    src.add_argument("--demo", action="store_true", help="the trained demo model emo-run --demo uses")
    src.add_argument("--random", metavar="PRESET", choices=sorted(PRESETS),
                     help="seeded random weights of a preset (hallo-sd15: real size, for export tests)")


def load_models(args: argparse.Namespace):
    """The torch modules add_model_source's arguments name."""
    from ..runtime.factory import RendererSpec
    from ..runtime.factory import load_models as load

    demo = bool(args.demo) or not (args.models or args.random)
    return load(RendererSpec(models=args.models, demo=demo, random=args.random, family=getattr(args, "family", None)))


class Terminated(BaseException):
    """SIGTERM or SIGHUP (timeout, docker stop, job schedulers, a closed terminal), raised in the main thread so that
    the work unwinds like Ctrl-C: every open output deletes its temporary file. Not an Exception, so that no
    `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


TERMINATING = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def terminating_signals_raise() -> Iterator[None]:
    """While the block runs, SIGTERM / SIGHUP raise Terminated (once: a second one does not cut the cleanup)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be installed from the main thread
        return
    received: list[int] = []

    def handler(signum: int, frame) -> None:
        if not received:
            received.append(signum)
            raise Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in TERMINATING}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_main(prog: str, body: Callable[[argparse.Namespace], int], args: argparse.Namespace,
             interrupted: str = "interrupted") -> int:
    """Run a command body: bad input -> one line and exit 2; Ctrl-C -> 130, SIGHUP -> 129, SIGTERM -> 143 (128 +
    the signal, as a shell reports it), after cleaning up; anything else -> one line and 1 (with --verbose, the
    traceback instead)."""
    verbose = getattr(args, "verbose", False)
    try:
        with terminating_signals_raise():
            return body(args)
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 128 + signal.SIGINT
    except Terminated as e:
        print(f"{prog}: {signal.Signals(e.signum).name} received: {interrupted}", file=sys.stderr)
        return 128 + e.signum
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
