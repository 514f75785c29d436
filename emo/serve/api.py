"""The versioned HTTP API and the web page, as a FastAPI app built around one Ingress (see ingress.py).

(No `from __future__ import annotations` here: FastAPI reads the route signatures' types at run time.)
"""
import hmac
from importlib import resources
from typing import TYPE_CHECKING

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse

from ..errors import InputError
from .errors import QueueFull, TooLarge
from .jobs import DONE, FINISHED

if TYPE_CHECKING:
    from .ingress import Ingress

API = "/v1/renders"
PUBLIC = ("/healthz", "/")  # everything else needs the bearer token when one is set


def _guard(app, token: str | None, max_body: int):
    """ASGI middleware: the bearer token on every route but PUBLIC, and the body size before it is read."""
    async def guarded(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if token and scope["path"] not in PUBLIC:
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return await JSONResponse({"error": "missing or wrong bearer token"}, 401,
                                          {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        if scope["method"] in ("POST", "PUT", "PATCH"):
            length = headers.get("content-length")
            if length is None or not length.isdigit():
                return await JSONResponse({"error": "a Content-Length header is required"}, 411)(
                    scope, receive, send)
            if int(length) > max_body:
                return await JSONResponse({"error": f"request body is larger than this server accepts "
                                                    f"({max_body // 2**20} MiB)"}, 413)(scope, receive, send)
        return await app(scope, receive, send)

    return guarded


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

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException):
        return JSONResponse({"error": e.detail}, e.status_code, e.headers)

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
                     frames_out: bool = Form(False, description="also keep the raw float frames (.npy)")):
        """Queue a render -> 202 and the job (its links: status, video, stream). 400/413: bad input, with
        emo-run's message; 429 + Retry-After: the queue is full."""
        form = dict(steps=steps, guidance_scale=guidance_scale, fps=fps, size=size,
                    frames_per_clip=frames_per_clip, motion_frames=motion_frames, seed=seed)
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
        """The video as it is made: fragmented MP4, clip by clip, ending when the render does."""
        return StreamingResponse(ingress.follow(job_or_404(job_id)), media_type="video/mp4")

    @app.delete(API + "/{job_id}")
    async def cancel(job_id: str, request: Request):
        """Cancel a queued or running render; delete a finished one and its files."""
        job = job_or_404(job_id)
        if job.state in FINISHED:
            ingress.jobs.drop(job_id)
            return {"id": job_id, "deleted": True}
        await ingress.cancel(job)
        return job.public(str(request.url_for("submit")).rstrip("/"))

    return _guard(app, ingress.config.token, limits.max_upload_bytes)
