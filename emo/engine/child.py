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


def main() -> int:
    job = pickle.load(sys.stdin.buffer)
    start = time.perf_counter()
    try:
        io = build_plan(importlib.import_module(job.pop("module")), **job)
        result = ("ok", {"network_io": io, "seconds": round(time.perf_counter() - start, 2),
                         "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
    except InputError as e:
        result = ("error", e)
    with open(sys.argv[1], "wb") as f:
        pickle.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
