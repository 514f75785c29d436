"""The versioned HTTP API and the web page, as a FastAPI app built around one Ingress (see ingress.py).

(No `from __future__ import annotations` here: FastAPI reads the route signatures' types at run time.)
"""
from importlib import resources
from typing import TYPE_CHECKING

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import InputError
from .errors import QueueFull, TooLarge
from .guard import guard
from .jobs import CANCELLED, DONE, FAILED, FINISHED
from .uploads import FORM_FIELDS

if TYPE_CHECKING:
    from .ingress import Ingress

API = "/v1/renders"
SUBMIT_FIELDS = {"image", "audio", "seed", "frames_out", *FORM_FIELDS}


def create_api(ingress: "Ingress"):
    """The FastAPI app of one ingress (built inside its replica, once the settings are known)."""
    limits = ingress.config.limits
    app = FastAPI(title="emo-serve", version="1",
                  description="Portrait image + voice -> talking-portrait video, rendered by a pool of replicas.")

    @app.exception_handler(InputError)
    async def bad_input(_: Request, e: InputError):
        return JSONResponse({"error": str(e)}, 413 if isinstance(e, TooLarge) else 400)

    @app.exception_handler(QueueFull)
    async def queue_full(_: Request, e: QueueFull):
        return JSONResponse({"error": "the render queue is full; try again later"}, 429,
                            {"Retry-After": str(e.retry_after_s)})

    @app.exception_handler(RequestValidationError)
    async def bad_form(_: Request, e: RequestValidationError):
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, 422)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's, and Starlette's own (404, 405, multipart errors)
    async def http_error(_: Request, e: StarletteHTTPException):
        return JSONResponse({"error": str(e.detail)}, e.status_code, e.headers)

    def job_or_404(job_id: str):
        job = ingress.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no render {job_id} (unknown, or expired after "
                                     f"{limits.result_ttl_s:g} s)")
        return job

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return (resources.files("emo.serve") / "static" / "index.html").read_text()

    @app.get("/healthz")
    async def healthz():
        """Liveness: answers without the token."""
        return {"status": "ok"}

    @app.get("/metrics", response_class=Response)
    async def metrics():
        """Prometheus text format: queue length, renders in flight, frames/s, failures by reason."""
        body, kind = ingress.metrics.exposition()
        return Response(body, media_type=kind)

    @app.post(API, status_code=202)
    async def submit(request: Request,
                     image: UploadFile = File(..., description="portrait photo (any format Pillow decodes)"),
                     audio: UploadFile = File(..., description="voice (any format FFmpeg decodes)"),
                     steps: int | None = Form(None), guidance_scale: float | None = Form(None),
                     fps: int | None = Form(None), size: int | None = Form(None),
                     frames_per_clip: int | None = Form(None), motion_frames: int | None = Form(None),
                     seed: int | None = Form(None),
                     speed: str | None = Form(None, description="quality, balanced, fast or realtime"),
                     sampler: str | None = Form(None), guidance_interval: str | None = Form(None),
                     cache_interval: int | None = Form(None), first_clip_frames: int | None = Form(None),
                     frames_out: bool = Form(False, description="also keep the raw float frames (.npy)")):
        """Queue a render -> 202 and the job (its links: status, video, stream). 400/413: bad input, with
        emo-run's message; 429 + Retry-After: the queue is full."""
        unknown = sorted(set((await request.form()).keys()) - SUBMIT_FIELDS)  # the form parsed above, cached
        if unknown:
            raise InputError(f"unknown form field {unknown[0]!r} (fields: {', '.join(sorted(SUBMIT_FIELDS))})")
        form = dict(steps=steps, guidance_scale=guidance_scale, fps=fps, size=size,
                    frames_per_clip=frames_per_clip, motion_frames=motion_frames, seed=seed, speed=speed,
                    sampler=sampler, guidance_interval=guidance_interval, cache_interval=cache_interval,
                    first_clip_frames=first_clip_frames)
        job = await ingress.submit(image.file, audio.file, form, frames_out)
        base = str(request.url_for("submit")).rstrip("/")
        return JSONResponse(job.public(base), 202, {"Location": f"{base}/{job.id}"})

    @app.get(API + "/{job_id}")
    async def status(job_id: str, request: Request):
        """State (queued, running, done, failed, cancelled), progress (clips done / total), error."""
        return job_or_404(job_id).public(str(request.url_for("submit")).rstrip("/"))

    @app.get(API + "/{job_id}/video", response_class=FileResponse)
    async def video(job_id: str):
        """The finished MP4: H.264 + the voice as AAC, encoded as emo-run encodes it."""
        job = job_or_404(job_id)
        if job.state != DONE:
            raise HTTPException(409, job.error or f"render {job_id} is {job.state}, not done")
        return FileResponse(job.video, media_type="video/mp4", filename=f"{job_id}.mp4")

    @app.get(API + "/{job_id}/frames", response_class=FileResponse)
    async def frames(job_id: str):
        """The raw float32 frames (f, H, W, 3) in [0, 1] as .npy, when submitted with frames_out."""
        job = job_or_404(job_id)
        if job.frames is None:
            raise HTTPException(404, f"render {job_id} was submitted without frames_out")
        if job.state != DONE:
            raise HTTPException(409, job.error or f"render {job_id} is {job.state}, not done")
        return FileResponse(job.frames, media_type="application/octet-stream", filename=f"{job_id}.npy")

    @app.get(API + "/{job_id}/stream")
    async def stream(job_id: str):
        """The video as it is made: fragmented MP4, clip by clip, ending when the render does; 409 for a render
        that failed or was cancelled (its partial video is deleted)."""
        job = job_or_404(job_id)
        if job.state in (FAILED, CANCELLED):
            raise HTTPException(409, job.error or f"render {job_id} was {job.state}; it has no video")
        return StreamingResponse(ingress.follow(job), media_type="video/mp4")

    @app.delete(API + "/{job_id}")
    async def cancel(job_id: str, request: Request):
        """Cancel a queued or running render; delete a finished one and its files."""
        job = job_or_404(job_id)
        if job.state in FINISHED:
            ingress.jobs.drop(job_id)
            return {"id": job_id, "deleted": True}
        await ingress.cancel(job)
        return job.public(str(request.url_for("submit")).rstrip("/"))

    return guard(app, ingress.config.token, limits)
