"""Private per-job directories for uploads, named after the process that owns them.

A process killed mid-render (a replica lost to OOM or a kill) cannot clean up after itself, so every directory is
named `emo-serve-<host>-<pid>-<random>` and each process sweeps, when it starts, the directories of this host
whose owner is gone. Client file names are never used: a job's files are called `image` and `audio`.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

PREFIX = "emo-serve-"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())


def private_dir(root: str | Path | None) -> Path:
    """A new directory only this user can read (mode 0700), under `root` (default: the system temp dir)."""
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{_host()}-{os.getpid()}-", dir=root))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphans(root: str | Path | None) -> list[Path]:
    """Delete this host's private dirs whose owning process has exited -> the dirs removed."""
    root = Path(root or tempfile.gettempdir())
    pattern = re.compile(rf"{re.escape(PREFIX + _host())}-(\d+)-")
    removed = []
    for d in root.glob(f"{PREFIX}{_host()}-*"):
        m = pattern.match(d.name)
        if m and d.is_dir() and not _alive(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed
