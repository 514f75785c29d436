"""The ingress deployment: takes uploads, checks them, hands renders to the replicas and keeps their results.

One ingress replica holds the job records (cheap work: it never runs the model). Renders go to the RenderWorker
deployment through a streaming DeploymentHandle: Ray Serve queues them (at most max_queued_requests, then
BackPressureError -> 429) and routes each to a free replica (max_ongoing_requests=1). Each job is followed by a
task that writes the streamed fragments to the job's MP4 and mirrors progress into its record.
"""
from __future__ import annotations

import asyncio
import math
import os
import shutil
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import AsyncIterator, BinaryIO

import numpy as np

from ..errors import InputError
from . import events
from .api import create_api
from .budget import Cost, check_disk
from .errors import QueueFull, TooLarge
from .jobs import CANCELLED, DONE, FAILED, FINISHED, QUEUED, RUNNING, Job, JobTable
from .metrics import Metrics
from .settings import ServeConfig
from .tempdirs import private_dir, sweep_orphans
from .uploads import check_inputs, run_options, save_upload
from .worker import RenderJob

ADMISSION_WAIT_S = 0.5  # a render not refused by Serve's queue within this time is queued (202)
CHECK_THREADS = 4  # uploads checked at once, off the event loop (each decode stops at the server's limits)
EXPIRY_PERIOD_S = 30.0


class Ingress:
    async def __init__(self, worker, config: ServeConfig):
        from ..runtime.renderer import face_analysis

        self.worker, self.config = worker, config
        described = await worker.describe.remote()  # waits for the first replica to load its model
        self.model = described["model"]
        spec = config.renderer
        self.detector, _ = face_analysis(spec.face_models_dir())  # the replicas' detector, to refuse faceless photos
        self.face_expand_ratio, self.base_run = spec.face_expand_ratio, spec.preset_run()
        sweep_orphans(config.temp_dir)
        if config.results_dir:
            self.results = Path(config.results_dir)
            self.results.mkdir(parents=True, exist_ok=True)
        else:
            self.results = private_dir(config.temp_dir)
        self.jobs = JobTable(self.results, config.limits.result_ttl_s)
        self.metrics = Metrics(lambda: self.jobs.count(QUEUED), lambda: self.jobs.count(RUNNING))
        self._checker = ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="emo-serve-check")
        self._durations: deque[float] = deque(maxlen=20)
        self._tasks: set[asyncio.Task] = set()
        self._expiry = asyncio.get_running_loop().create_task(self._expire_loop())

    def __serve_build_asgi_app__(self):
        return create_api(self)

    async def __del__(self):
        self._expiry.cancel()
        for job in self.jobs.all():
            if job.state not in FINISHED:
                await self.cancel(job)
        self._checker.shutdown(wait=False)
        if not self.config.results_dir:
            shutil.rmtree(self.results, ignore_errors=True)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(min(EXPIRY_PERIOD_S, self.config.limits.result_ttl_s))
            self.jobs.expire()

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the recent mean render time times the queue ahead, per replica."""
        if not self._durations:
            return self.config.limits.retry_after_s
        mean = sum(self._durations) / len(self._durations)
        ahead = self.jobs.count(QUEUED) + self.jobs.count(RUNNING)
        return max(1, min(3600, math.ceil(mean * ahead / max(1, self.config.replicas))))

    def _check(self, image: BinaryIO, audio: BinaryIO, form: dict, frames_out: bool):
        limits = self.config.limits
        run, seed = run_options(form, self.base_run, self.model)
        d = private_dir(self.config.temp_dir)
        try:
            save_upload(image, d / "image", limits.max_upload_bytes, "uploaded image")
            save_upload(audio, d / "audio", limits.max_upload_bytes, "uploaded audio")
            return check_inputs(d, run, seed, self.model, self.detector, self.face_expand_ratio, limits, frames_out)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    async def submit(self, image: BinaryIO, audio: BinaryIO, form: dict, frames_out: bool) -> Job:
        """Check, then queue a render -> its job; raises InputError (400/413) or QueueFull (429)."""
        loop = asyncio.get_running_loop()
        try:
            checked = await loop.run_in_executor(self._checker, self._check, image, audio, form, frames_out)
            self._check_disk(checked.cost)  # here, on the loop: no other submit can reserve the same bytes
        except InputError as e:
            self.metrics.rejected.labels(status=413 if isinstance(e, TooLarge) else 400).inc()
            raise
        job = self.jobs.new(checked.run, checked.seed, frames_out)
        job.reserved_bytes = checked.cost.results_bytes
        request = RenderJob(job.id, checked.image, checked.audio, checked.run, checked.seed, frames_out)
        admitted = loop.create_future()
        task = loop.create_task(self._follow_render(job, request, admitted))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            accepted = await asyncio.wait_for(asyncio.shield(admitted), ADMISSION_WAIT_S)
        except asyncio.TimeoutError:
            accepted = True  # waiting in Serve's queue for a replica
        if not accepted:
            self.jobs.drop(job.id)
            self.metrics.rejected.labels(status=429).inc()
            raise QueueFull(self.retry_after())
        self.metrics.submitted.inc()
        return job

    def _check_disk(self, cost: Cost) -> None:
        """Refuse a render whose files the results and temp disks cannot hold beside those of the renders
        already accepted (their full estimate counts until they finish)."""
        pending = sum(j.reserved_bytes for j in self.jobs.all() if j.state not in FINISHED)
        temp = Path(self.config.temp_dir or tempfile.gettempdir())
        need = {self.results: pending + cost.results_bytes}
        need[temp] = need.get(temp, 0) + cost.temp_bytes
        check_disk(need, self.config.limits.min_free_disk_bytes)

    async def cancel(self, job: Job) -> None:
        job.state, job.finished = CANCELLED, time.time()
        self.metrics.cancelled.inc()
        if job.response is not None:
            job.response.cancel()
        await job.notify()

    async def _follow_render(self, job: Job, request: RenderJob, admitted: asyncio.Future) -> None:
        """Send the render to Serve and mirror its event stream into the job."""
        from ray.exceptions import RayActorError, TaskCancelledError
        from ray.serve.exceptions import BackPressureError

        response = job.response = self.worker.options(stream=True).render.remote(request)
        raw = None
        try:
            async for event in response:
                if not admitted.done():
                    admitted.set_result(True)
                raw = self._apply(job, event, raw)
                await job.notify()
        except BackPressureError:
            if not admitted.done():
                admitted.set_result(False)
                return
            self._fail(job, "queue_full", "the render queue was full; submit again")
        except (TaskCancelledError, asyncio.CancelledError):
            if job.state not in FINISHED:
                job.state = CANCELLED
        except RayActorError as e:
            self._fail(job, "replica_died", f"the render replica died during the render ({type(e).__name__}); "
                                            "submit it again")
        except Exception as e:  # reported on the job, with its type
            self._fail(job, "internal", f"{type(e).__name__}: {e}")
        finally:
            if not admitted.done():
                admitted.set_result(True)
            del raw  # closes the frames memmap
            if job.state != DONE:
                job.state = job.state if job.state in FINISHED else FAILED
                job.remove_files()
            job.finished = job.finished or time.time()
            await job.notify()

    def _fail(self, job: Job, reason: str, message: str) -> None:
        if job.state in FINISHED:
            return
        job.state, job.reason, job.error, job.finished = FAILED, reason, message, time.time()
        self.metrics.failures.labels(reason=reason).inc()

    def _apply(self, job: Job, event: events.Event, raw: np.ndarray | None) -> np.ndarray | None:
        """One event from the replica -> the job's record and files (returns the open frames memmap)."""
        if job.state in FINISHED:  # cancelled while events were in flight
            return raw
        match event:
            case events.Started():
                job.state, job.started = RUNNING, time.time()
                job.clips, job.steps, job.frames_total = event.clips, event.steps, event.frames
                job.replica = {"replica": event.replica, "node": event.node, "pid": event.pid}
                job.faces_found = event.faces_found
                job.stream.write_bytes(b"")
                if job.frames is not None:
                    raw = np.lib.format.open_memmap(job.frames.with_name(job.frames.name + ".part"), mode="w+",
                                                    dtype=np.float32, shape=(job.frames_total, job.run.size,
                                                                             job.run.size, 3))
            case events.Progress():
                job.clip, job.clips, job.step, job.steps = event.clip, event.clips, event.step, event.steps
                job.frames_done = event.frames_done
            case events.Stream():
                with open(job.stream, "ab") as f:
                    f.write(event.data)
                job.stream_bytes += len(event.data)
            case events.VideoChunk():
                with open(job.video, "ab") as f:
                    f.write(event.data)
            case events.Frames():
                raw[job.frames_done:job.frames_done + len(event.frames)] = event.frames
            case events.ClipDone():
                job.frames_done, job.clip, job.step = event.frames_done, job.clip + 1, 0
            case events.Done():
                if raw is not None:
                    raw.flush()
                    os.replace(job.frames.with_name(job.frames.name + ".part"), job.frames)
                    raw = None
                job.state, job.finished, job.frames_done = DONE, time.time(), event.frames
                self._durations.append(job.finished - (job.started or job.created))  # time on a replica
                self.metrics.completed.inc()
                self.metrics.frames.inc(job.frames_done)
                self.metrics.fps.set(job.frames_done / max(event.seconds, 1e-9))
                self.metrics.seconds.observe(job.finished - job.created)
            case events.Failed():
                self._fail(job, event.reason, event.message)
            case events.Cancelled():
                job.state, job.finished = CANCELLED, job.finished or time.time()
        return raw

    async def follow(self, job: Job) -> AsyncIterator[bytes]:
        """The job's fragmented MP4 as it is written, until the render ends."""
        sent = 0
        while True:
            async with job.changed:
                await job.changed.wait_for(lambda sent=sent: job.stream_bytes > sent or job.state in FINISHED)
            if job.stream_bytes > sent:
                try:
                    with open(job.stream, "rb") as f:
                        f.seek(sent)
                        data = f.read(job.stream_bytes - sent)
                except FileNotFoundError:  # failed or cancelled: its partial video was removed
                    return
                sent += len(data)
                yield data
            elif job.state in FINISHED:
                return
