"""What a render will cost, worked out at submit from its settings and the voice's length: refused (413) when it is
over the per-request budget, or when the disks that will hold its files cannot hold them now."""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig
from .errors import TooLarge
from .settings import Limits

VIDEO_BYTES_PER_PIXEL = 0.05  # an upper estimate of H.264 at CRF 18 (portraits take a fraction of it)
RAW_BYTES_PER_PIXEL = 12  # float32 RGB


@dataclass(frozen=True)
class Cost:
    frames: int
    size: int
    raw: bool  # frames_out: the raw frames are kept too

    @property
    def pixels(self) -> int:
        return self.frames * self.size * self.size

    @property
    def video_bytes(self) -> int:
        return math.ceil(self.pixels * VIDEO_BYTES_PER_PIXEL) + (1 << 20)

    @property
    def raw_bytes(self) -> int:
        return self.pixels * RAW_BYTES_PER_PIXEL if self.raw else 0

    @property
    def results_bytes(self) -> int:
        """What the ingress keeps: the finished MP4, the streamed MP4 and the raw frames."""
        return 2 * self.video_bytes + self.raw_bytes

    @property
    def temp_bytes(self) -> int:
        """What a replica writes under the temp dir while rendering: the uploads and its MP4."""
        return self.video_bytes + (64 << 20)


def render_cost(run: RunConfig, seconds: float, frames_out: bool) -> Cost:
    return Cost(math.ceil(seconds * run.fps), run.size, frames_out)


def check_budget(cost: Cost, limits: Limits) -> None:
    """Refuse a render over the per-request budget (frames x pixels, raw-frame bytes)."""
    if cost.pixels > limits.max_output_pixels:
        raise TooLarge(f"this render is {cost.frames} frames of {cost.size}x{cost.size} "
                       f"({cost.pixels / 1e9:.2f} gigapixels); this server renders at most "
                       f"{limits.max_output_pixels / 1e9:g} gigapixels a request (use a shorter voice, lower fps "
                       f"or a smaller size)")
    if cost.raw_bytes > limits.max_frames_out_bytes:
        raise TooLarge(f"frames_out would keep {cost.raw_bytes / 2**30:.1f} GiB of raw frames; this server keeps at "
                       f"most {limits.max_frames_out_bytes / 2**30:g} GiB a request")


def check_disk(need: dict[Path, int], reserve: int) -> None:
    """Refuse when writing need[d] more bytes under each dir d (dirs on one filesystem added up) would leave less
    than `reserve` bytes free there."""
    by_fs: dict[int, tuple[Path, int]] = {}
    for d, n in need.items():
        fs = os.stat(d).st_dev
        by_fs[fs] = (by_fs[fs][0] if fs in by_fs else d, by_fs.get(fs, (d, 0))[1] + n)
    for d, n in by_fs.values():
        free = shutil.disk_usage(d).free
        if n + reserve > free:
            raise TooLarge(f"the server's disk cannot hold this render's output now ({n / 2**30:.1f} GiB needed, "
                           f"{max(0, free - reserve) / 2**30:.1f} GiB available); try again later or ask for less")
