"""The ASGI layer in front of the API: the bearer token, the body's size before it is read, and its arrival time.

A body must arrive within `upload_timeout_s` with no gap longer than `upload_idle_timeout_s`; a stalled upload is
answered 408 and its connection closed, so a slow or silent client cannot hold the server's memory or a check slot.
"""
from __future__ import annotations

import asyncio
import hmac

from fastapi.responses import JSONResponse

from .settings import Limits

PUBLIC = ("/healthz", "/")  # everything else needs the bearer token when one is set
BODY_METHODS = ("POST", "PUT", "PATCH")


def _header(scope, name: bytes) -> bytes | None:
    """A request header's raw bytes (names compared case-insensitively), None when absent."""
    for k, v in scope["headers"]:
        if k.lower() == name:
            return v
    return None


def authorized(scope, token: str) -> bool:
    """The Authorization header is `Bearer <token>`, compared as bytes in constant time."""
    given = _header(scope, b"authorization") or b""
    return hmac.compare_digest(given, b"Bearer " + token.encode())


async def _with_body_deadline(app, scope, receive, send, limits: Limits) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.upload_timeout_s
    state = {"body_done": False, "timed_out": False, "started": False}

    async def timed_receive():
        if state["body_done"]:
            return await receive()
        if state["timed_out"]:
            return {"type": "http.disconnect"}
        wait = max(0.0, min(limits.upload_idle_timeout_s, deadline - loop.time()))
        try:
            message = await asyncio.wait_for(receive(), wait)
        except asyncio.TimeoutError:
            state["timed_out"] = True
            return {"type": "http.disconnect"}  # the app gives up on the body as if the client had gone
        if message["type"] != "http.request" or not message.get("more_body", False):
            state["body_done"] = True
        return message

    async def guarded_send(message) -> None:
        if state["timed_out"]:
            return  # the app's answer to a body that never came: ours goes out instead
        state["started"] = True
        await send(message)

    try:
        await app(scope, timed_receive, guarded_send)
    except Exception:
        if not state["timed_out"]:
            raise
    if state["timed_out"] and not state["started"]:
        await JSONResponse({"error": f"the request body did not arrive in time (no data for "
                                     f"{limits.upload_idle_timeout_s:g} s, or all of it not within "
                                     f"{limits.upload_timeout_s:g} s)"}, 408,
                           {"Connection": "close"})(scope, receive, send)


def guard(app, token: str | None, limits: Limits):
    """ASGI middleware around `app`: the token on every route but PUBLIC, then a body's size and deadline."""
    max_body = limits.max_upload_bytes

    async def guarded(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        if token and scope["path"] not in PUBLIC and not authorized(scope, token):
            return await JSONResponse({"error": "missing or wrong bearer token"}, 401,
                                      {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        if scope["method"] not in BODY_METHODS:
            return await app(scope, receive, send)
        length = (_header(scope, b"content-length") or b"").decode("latin-1")
        if not length.isdigit():
            return await JSONResponse({"error": "a Content-Length header is required"}, 411)(scope, receive, send)
        if int(length) > max_body:
            return await JSONResponse({"error": f"request body is larger than this server accepts "
                                                f"({max_body // 2**20} MiB)"}, 413)(scope, receive, send)
        return await _with_body_deadline(app, scope, receive, send, limits)

    return guarded
