"""The ingress's record of each render: its state, progress and result files, and who is waiting on it.

This is bookkeeping, not a queue: Ray Serve holds the waiting renders (bounded by max_queued_requests) and picks
the replica; a job only mirrors what its request's event stream reports.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)


@dataclass
class Job:
    id: str
    run: RunConfig
    seed: int
    video: Path  # the finished MP4 (emo-run's encoding), complete once DONE
    stream: Path  # the fragmented MP4 as it grows
    frames: Path | None  # raw float frames (.npy) when asked for
    created: float = field(default_factory=time.time)
    state: str = QUEUED
    started: float | None = None
    finished: float | None = None
    clip: int = 0  # clips done
    clips: int = 0
    step: int = 0  # steps done in the current clip
    steps: int = 0
    frames_done: int = 0
    frames_total: int = 0
    stream_bytes: int = 0
    reason: str | None = None  # failure class: input, internal, replica_died
    error: str | None = None
    replica: dict[str, Any] | None = None
    faces_found: int = 0  # more than 1: the largest was used
    reserved_bytes: int = 0  # the estimate of its result files, counted against the disk until it finishes
    response: Any = None  # the streaming DeploymentResponseGenerator, to cancel it
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def fraction(self) -> float:
        if self.state == DONE:
            return 1.0
        if not self.clips:
            return 0.0
        return (self.clip + (self.step / self.steps if self.steps else 0.0)) / self.clips

    def public(self, base: str) -> dict[str, Any]:
        """The JSON a client sees."""
        out = {"id": self.id, "state": self.state, "created": self.created, "started": self.started,
               "finished": self.finished,
               "progress": {"clips_done": self.clip, "clips": self.clips, "step": self.step, "steps": self.steps,
                            "frames_done": self.frames_done, "frames": self.frames_total,
                            "fraction": round(self.fraction, 4)},
               "settings": {"steps": self.run.steps, "size": self.run.size, "fps": self.run.fps,
                            "guidance_scale": self.run.guidance_scale, "frames_per_clip": self.run.frames,
                            "motion_frames": self.run.motion_frames, "seed": self.seed},
               "faces_found": self.faces_found, "error": self.error, "reason": self.reason,
               "replica": self.replica,
               "links": {"self": f"{base}/{self.id}", "video": f"{base}/{self.id}/video",
                         "stream": f"{base}/{self.id}/stream"}}
        if self.frames is not None:
            out["links"]["frames"] = f"{base}/{self.id}/frames"
        return out

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def remove_files(self) -> None:
        for p in (self.video, self.stream, self.frames):
            if p is not None:
                p.unlink(missing_ok=True)
                p.with_name(p.name + ".part").unlink(missing_ok=True)


class JobTable:
    def __init__(self, results: Path, ttl_s: float):
        self.results, self.ttl_s = results, ttl_s
        self._jobs: dict[str, Job] = {}

    def new(self, run: RunConfig, seed: int, frames_out: bool) -> Job:
        jid = uuid.uuid4().hex
        job = Job(jid, run, seed, self.results / f"{jid}.mp4", self.results / f"{jid}.stream.mp4",
                  self.results / f"{jid}.npy" if frames_out else None)
        self._jobs[jid] = job
        return job

    def get(self, jid: str) -> Job | None:
        return self._jobs.get(jid)

    def drop(self, jid: str) -> None:
        job = self._jobs.pop(jid, None)
        if job is not None:
            job.remove_files()

    def count(self, state: str) -> int:
        return sum(1 for j in self._jobs.values() if j.state == state)

    def expire(self, now: float | None = None) -> int:
        """Forget finished jobs older than the TTL and delete their files -> how many."""
        now = time.time() if now is None else now
        old = [j.id for j in self._jobs.values() if j.finished is not None and now - j.finished > self.ttl_s]
        for jid in old:
            self.drop(jid)
        return len(old)

    def all(self) -> list[Job]:
        return list(self._jobs.values())
