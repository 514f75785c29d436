"""One plan build in a child process: `python -m emo.engine.child RESULT` reads the job (pickled by the parent) on
stdin and pickles ("ok", result) or ("error", exception) into RESULT. A fresh interpreter imports only the builder
and TensorRT, so its peak RSS is the build's own."""
from __future__ import annotations

import importlib
import pickle
import resource
import sys
import time

from ..errors import InputError
from .builder import build_plan


def peak_rss_kib() -> int:
    """This process's peak resident memory since it started this program. Linux's VmHWM belongs to the address
    space exec made; ru_maxrss (elsewhere) would also count the parent's memory at the fork."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> int:
    job = pickle.load(sys.stdin.buffer)
    start = time.perf_counter()
    try:
        io = build_plan(importlib.import_module(job.pop("module")), **job)
        result = ("ok", {"network_io": io, "seconds": round(time.perf_counter() - start, 2),
                         "peak_rss_mib": round(peak_rss_kib() / 1024, 1)})
    except InputError as e:
        result = ("error", e)
    with open(sys.argv[1], "wb") as f:
        pickle.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
