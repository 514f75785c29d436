"""Prometheus metrics of the ingress (GET /metrics), in a registry of their own."""
from __future__ import annotations

from typing import Callable


class Metrics:
    def __init__(self, queued: Callable[[], int], running: Callable[[], int]):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        Gauge("emo_serve_queue_length", "renders accepted and waiting for a replica", registry=r).set_function(queued)
        Gauge("emo_serve_renders_in_flight", "renders running on a replica", registry=r).set_function(running)
        self.fps = Gauge("emo_serve_frames_per_second", "frames per second of the last finished render "
                         "(from start on its replica to its last frame)", registry=r)
        self.frames = Counter("emo_serve_frames", "frames rendered", registry=r)
        self.submitted = Counter("emo_serve_renders_submitted", "renders accepted (202)", registry=r)
        self.completed = Counter("emo_serve_renders_completed", "renders finished with a video", registry=r)
        self.cancelled = Counter("emo_serve_renders_cancelled", "renders cancelled by a client", registry=r)
        self.rejected = Counter("emo_serve_requests_rejected", "requests refused before queueing, by HTTP status",
                                ["status"], registry=r)
        self.failures = Counter("emo_serve_failures", "accepted renders that failed, by reason", ["reason"],
                                registry=r)
        self.seconds = Histogram("emo_serve_render_seconds", "submit to finished video", registry=r,
                                 buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600))

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
