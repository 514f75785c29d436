"""emo-serve's settings: the limits a server enforces and how its replicas are laid out."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..runtime.factory import RendererSpec


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; anything over a limit is refused before it is queued."""

    max_upload_bytes: int = 50 * 2**20  # the whole multipart body
    max_audio_seconds: float = 120.0
    max_size: int = 1024  # output side in pixels
    max_image_pixels: int = 40_000_000  # decoded photo (also stops decompression bombs)
    max_output_pixels: int = 3_200_000_000  # frames x side^2 of one render: 2 min at 25 fps at 1024x1024
    max_frames_out_bytes: int = 8 * 2**30  # the raw float frames (.npy) one render may keep (frames_out)
    min_free_disk_bytes: int = 2**30  # left free on the results and temp disks after every accepted render
    upload_timeout_s: float = 300.0  # the whole request body must arrive within this
    upload_idle_timeout_s: float = 30.0  # ... with no gap longer than this (a stalled upload is answered 408)
    max_queued: int = 8  # accepted renders waiting for a replica; one more answers 429
    result_ttl_s: float = 3600.0  # finished jobs and their files are deleted after this
    retry_after_s: int = 10  # Retry-After on a 429 until render times are known


LIMIT_PRESETS = {
    "default": Limits(),
    "demo": Limits(max_audio_seconds=30.0, max_size=256, max_queued=4),
}


@dataclass(frozen=True)
class ServeConfig:
    """Everything the application is built from (emo-serve's command line, or a test)."""

    renderer: RendererSpec  # what each replica loads, and how
    replicas: int = 1
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0
    limits: Limits = field(default_factory=Limits)
    results_dir: str | None = None  # default: a private temp dir, removed at shutdown
    temp_dir: str | None = None  # where private per-job upload dirs are made (default: the system's)
    token: str | None = None  # bearer token for every route but /healthz and the page
