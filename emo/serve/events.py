"""What a render replica streams back to the ingress, one event per thing that happened, in this order:
Started, then Progress / Stream / Frames / ClipDone as clips are made, then VideoChunk pieces of the finished
MP4 and Done; or Failed / Cancelled at any point."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Started:
    frames: int  # frames in the video
    clips: int
    steps: int
    faces_found: int
    replica: str
    node: str
    pid: int


@dataclass(frozen=True)
class Progress:
    clip: int  # 0-based
    clips: int
    step: int  # steps done in this clip
    steps: int
    frames_done: int


@dataclass(frozen=True)
class Stream:
    data: bytes  # the next bytes of the fragmented MP4


@dataclass(frozen=True)
class Frames:
    frames: np.ndarray  # (k, H, W, 3) float32 in [0, 1]: the clip's raw frames


@dataclass(frozen=True)
class ClipDone:
    frames_done: int


@dataclass(frozen=True)
class VideoChunk:
    data: bytes  # the next bytes of the finished MP4


@dataclass(frozen=True)
class Done:
    frames: int
    seconds: float


@dataclass(frozen=True)
class Failed:
    reason: str  # "input" or "internal"
    message: str


@dataclass(frozen=True)
class Cancelled:
    pass


Event = Started | Progress | Stream | Frames | ClipDone | VideoChunk | Done | Failed | Cancelled
