"""Refusals of the serving API that both the ingress and its HTTP layer raise or answer."""
from __future__ import annotations

from ..errors import InputError


class TooLarge(InputError):
    """An upload or a decoded input over one of the server's limits (HTTP 413)."""


class QueueFull(Exception):
    """Every replica is busy and the queue is at its limit (HTTP 429 with Retry-After)."""

    def __init__(self, retry_after_s: int):
        super().__init__(f"the render queue is full; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s
