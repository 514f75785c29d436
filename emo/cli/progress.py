"""A one-line progress display on a terminal: clip i/N, step, frames/s, ETA."""
from __future__ import annotations

import sys

from ..runtime.renderer import Progress


class ProgressLine:
    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.enabled = stream.isatty()

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        steps_total = p.clips * p.steps
        steps_done = p.clip * p.steps + p.step
        rate = steps_done / p.elapsed if p.elapsed > 0 else 0.0
        eta = (steps_total - steps_done) / rate if rate else 0.0
        fps = p.frames_total * steps_done / steps_total / p.elapsed if p.elapsed > 0 else 0.0
        self.stream.write(f"\rclip {p.clip + 1}/{p.clips}  step {p.step}/{p.steps}  {fps:.2f} frames/s  "
                          f"ETA {int(eta // 60):02d}:{int(eta % 60):02d} ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
