"""A render replica: loads one Renderer once and renders one job at a time, streaming events back.

`render()` is an async generator that Ray Serve streams to the ingress: the events of `events.py` (Started,
Progress, Stream (fragmented-MP4 bytes) and, when asked, Frames per clip, then the finished MP4 as VideoChunks,
and Done; or Failed / Cancelled). The finished MP4 is written
by emo-run's own Mp4Writer (same encoder settings, so the same frames as `emo-run`); the stream is a separate
low-latency encoding (fmp4.py). The model runs in a worker thread; cancelling the request
(DELETE, or the client going away) stops it before its next unit of work (preparing, the reference, each clip,
each denoising step, each decode, each clip delivered), and the replica starts no other render until it has.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, Callable

import numpy as np

from ..config import RunConfig
from ..errors import InputError
from ..media.mp4 import Mp4Writer
from . import events
from .fmp4 import FragmentedMp4
from .tempdirs import private_dir, sweep_orphans

if TYPE_CHECKING:
    from ..runtime.factory import RendererSpec

CHUNK = 4 << 20  # bytes of the finished MP4 per event


@dataclass(frozen=True)
class RenderJob:
    """What the ingress sends a replica: the checked settings and the uploads' bytes (never client paths)."""

    id: str
    image: bytes
    audio: bytes
    run: RunConfig
    seed: int
    frames_out: bool = False


class CancelRequested(Exception):
    """Raised inside the render thread before its next unit of work once the request was cancelled."""


class RenderWorker:
    def __init__(self, spec: RendererSpec, temp_dir: str | None = None, threads: int | None = None):
        import torch

        from ..runtime.factory import build_renderer

        if threads:  # the CPUs Ray reserved for this replica (replicas sharing a machine must not oversubscribe)
            torch.set_num_threads(threads)
        self.temp_dir = temp_dir
        self._turn = asyncio.Lock()  # one render at a time, held until a cancelled one has really stopped
        sweep_orphans(temp_dir)  # what a killed predecessor on this host left behind
        self.renderer = build_renderer(spec)
        try:
            from ray import serve

            self.replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside Serve (a plain Python test of the class)
            self.replica = f"local-{os.getpid()}"

    def describe(self) -> dict:
        """The model this replica serves: the ingress checks uploads against it."""
        return {"model": self.renderer.cfg, "replica": self.replica}

    async def render(self, job: RenderJob) -> AsyncIterator[events.Event]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def emit(event: events.Event) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        def work() -> None:
            try:
                self._render(job, emit, cancel)
            except CancelRequested:
                emit(events.Cancelled())
            except InputError as e:
                emit(events.Failed("input", str(e)))
            except Exception as e:  # reported to the client as an internal error, with its type
                emit(events.Failed("internal", f"{type(e).__name__}: {e}"))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        # Serve frees the replica's slot as soon as a request is cancelled, without waiting for this generator to
        # end; the lock makes the next request wait here until the cancelled render's thread has returned.
        async with self._turn:
            thread = loop.run_in_executor(None, work)
            try:
                while (event := await queue.get()) is not None:
                    yield event
            finally:
                cancel.set()  # a cancelled request (or a consumer gone) stops the render before its next unit
                while not thread.done():
                    try:
                        await asyncio.shield(thread)
                    except asyncio.CancelledError:  # cancelled again: still wait for the render to stop
                        continue

    def _render(self, job: RenderJob, emit: Callable[[events.Event], None], cancel: threading.Event) -> None:
        from ..runtime.renderer import clip_spans

        d = private_dir(self.temp_dir)
        encoder = None
        try:
            image, audio = d / "image", d / "audio"
            image.write_bytes(job.image)
            audio.write_bytes(job.audio)
            run = job.run
            start = time.perf_counter()

            def interrupt(stage: str) -> None:
                if cancel.is_set():
                    raise CancelRequested

            interrupt("prepare")
            prepared = self.renderer.prepare(image, audio, run)
            interrupt("prepared")
            clips = len(clip_spans(prepared, run))
            emit(events.Started(prepared.frames, clips, run.steps, prepared.portrait.faces_found, self.replica,
                                socket.gethostname(), os.getpid()))
            encoder = FragmentedMp4(run.fps, run.size, run.frames, audio)

            def progress(p) -> None:
                if cancel.is_set():
                    raise CancelRequested
                emit(events.Progress(p.clip, p.clips, p.step, p.steps, p.frames_done))

            done = 0
            with Mp4Writer(d / "video.mp4", run.fps, run.size, audio) as writer:  # emo-run's own encoding
                for frames in self.renderer.stream(prepared, run, job.seed, progress, interrupt=interrupt):
                    if cancel.is_set():
                        raise CancelRequested
                    pixels = np.round(frames * 255).astype(np.uint8)
                    writer.write(pixels)
                    emit(events.Stream(encoder.write(pixels)))
                    if job.frames_out:
                        emit(events.Frames(frames))
                    done += len(frames)
                    emit(events.ClipDone(done))
            emit(events.Stream(encoder.close()))
            encoder = None
            with open(d / "video.mp4", "rb") as f:
                while chunk := f.read(CHUNK):
                    emit(events.VideoChunk(chunk))
            emit(events.Done(done, time.perf_counter() - start))
        finally:
            if encoder is not None:
                encoder.abort()
            shutil.rmtree(d, ignore_errors=True)
