"""Streaming .npy output of known shape: the header, then rows appended clip by clip with plain writes.

No memory map: writing through a map onto a file system that runs out of space kills the process with SIGBUS,
while a plain write returns an error. The whole size is reserved up front (posix_fallocate), so a disk that is
too small fails before the first frame is rendered.
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from .outputs import OutputWriter, atomic_output, output_target


class NpyWriter(OutputWriter):
    """with NpyWriter(path, shape) as w: w.write(rows) ...: rows (k, *shape[1:]) until shape[0] rows are written;
    renamed to `path` only when all of them are."""

    def __init__(self, path: str | Path, shape: tuple[int, ...], dtype: np.dtype = np.float32,
                 option: str = "frames output"):
        self.path = Path(path)
        self.target = output_target(self.path, option)
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.rows = 0

    @contextmanager
    def _open(self) -> Iterator["NpyWriter"]:
        with atomic_output(self.target) as tmp, open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                     "fortran_order": False, "shape": self.shape})
            f.flush()
            total = f.tell() + int(np.prod(self.shape)) * self.dtype.itemsize
            try:
                os.posix_fallocate(f.fileno(), 0, total)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # file systems without it: write as we go
                    raise
            self._file = f
            yield self
            if self.rows != self.shape[0]:
                raise RuntimeError(f"{self.path}: {self.rows} of {self.shape[0]} rows written")
            f.flush()

    def write(self, rows: np.ndarray) -> None:
        if rows.shape[1:] != self.shape[1:] or self.rows + rows.shape[0] > self.shape[0]:
            raise ValueError(f"rows of shape {rows.shape} do not fit {self.shape} after {self.rows} rows")
        self._file.write(np.ascontiguousarray(rows, self.dtype).data)
        self.rows += rows.shape[0]
