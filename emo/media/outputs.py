"""Output files that never destroy anything: checked before any work, written beside the target, renamed when whole.

- An output that exists must be a regular file: a device, FIFO, socket or directory there is refused, never replaced.
- A symlink is followed: the file is written beside its target and renamed onto the target, so the link survives.
- No output may be an input or another output (same inode, or the same resolved path for files not made yet).
- A file is renamed into place only after it was completely written, closed and synced; any error (a full disk
  included) deletes the temporary file and leaves whatever was at the target untouched.
"""
from __future__ import annotations

import errno
import itertools
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError

_serial = itertools.count()  # temporary names unique per process and call (threads may render side by side)
NO_SPACE = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file too large (file system or process size limit)"}
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class OutputSpaceError(InputError):
    """The output's file system ran out of space (or quota, or the size limit): the user's disk, exit 2."""


def output_target(path: str | Path, option: str = "output") -> Path:
    """The file an output path will be written to (a symlink's target), after refusing unusable paths."""
    path = Path(path)
    target = path
    if path.is_symlink():
        try:
            target = path.resolve(strict=False)
        except (OSError, RuntimeError):
            raise InputError(f"{option} {path} is a symlink loop") from None
    parent = target.parent
    if not parent.is_dir():
        raise InputError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output directory is not writable: {parent}")
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise InputError(f"{option} {path} is {kind}; give the path of a regular file")
    return target


def _identity(path: Path) -> tuple:
    """(device, inode) of an existing file, else its absolute resolved path: equal identities = the same file."""
    try:
        st = os.stat(path)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.realpath(path))


def refuse_overlaps(outputs: dict[str, Path], inputs: dict[str, Path]) -> None:
    """Refuse an output that is an input, or two outputs that are one file (any spelling: symlinks, ./, hard links).

    outputs / inputs: what each path is, for the message (e.g. "-o") -> the path."""
    seen: dict[tuple, str] = {_identity(Path(p)): f"the input {what} {p}" for what, p in inputs.items()}
    for what, p in outputs.items():
        key = _identity(Path(p))
        if key in seen:
            raise InputError(f"{what} {p} is {seen[key]}; choose another output path")
        seen[key] = f"the output {what}"


def temporary_sibling(target: Path) -> Path:
    """A hidden name beside `target`, unique in this process (so the rename stays on one file system)."""
    return target.with_name(f".{target.stem}.tmp-{os.getpid()}-{next(_serial)}{target.suffix}")


def space_error(e: OSError, target: Path) -> OutputSpaceError | None:
    """An OutputSpaceError for a full disk (ENOSPC, EDQUOT, EFBIG), else None."""
    reason = NO_SPACE.get(getattr(e, "errno", None))
    return OutputSpaceError(f"cannot write {target}: {reason}") if reason else None


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # surfaces delayed write errors (ENOSPC on some file systems) before the rename
    finally:
        os.close(fd)


@contextmanager
def atomic_output(target: Path) -> Iterator[Path]:
    """with atomic_output(target) as tmp: write and close `tmp` -> renamed onto `target` only if the block ends
    normally; on any error (or Ctrl-C, or a termination signal) `tmp` is deleted. A full disk becomes an
    OutputSpaceError."""
    tmp = temporary_sibling(target)
    try:
        yield tmp
        _sync(tmp)
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        err = space_error(e, target)
        if err is None:
            raise
        raise err from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class OutputWriter:
    """Base of the streaming writers: `with writer:` runs the subclass's `_open()` context (a generator that
    writes inside `atomic_output`), while the constructor checks the path before anything is computed."""

    def _open(self) -> Any:
        raise NotImplementedError

    def __enter__(self):
        self._session = self._open()
        return self._session.__enter__()

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        return self._session.__exit__(exc_type, exc, tb)
