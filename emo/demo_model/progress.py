"""Training progress: a live line on a terminal, a plain line every `every` steps otherwise (logs)."""
from __future__ import annotations

import sys
import time


class StageProgress:
    def __init__(self, stage: str, every: int = 50, stream=sys.stderr):
        self.stage, self.every, self.stream = stage, every, stream
        self.tty = stream.isatty()
        self.start, self.first = time.perf_counter(), None
        self.smoothed = None

    def __call__(self, step: int, steps: int, loss: float) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = (step, now)
        self.smoothed = loss if self.smoothed is None else 0.98 * self.smoothed + 0.02 * loss
        done = step - self.first[0]
        rate = done / (now - self.first[1]) if done > 0 and now > self.first[1] else 0.0
        eta = (steps - step) / rate if rate else 0.0
        line = (f"{self.stage}: step {step}/{steps}  loss {self.smoothed:.4f}  {rate:.2f} it/s  "
                f"ETA {int(eta // 3600)}:{int(eta % 3600 // 60):02d}:{int(eta % 60):02d}")
        if self.tty:
            self.stream.write("\r" + line + " ")
            if step == steps:
                self.stream.write("\n")
        elif step % self.every == 0 or step == steps:
            self.stream.write(line + "\n")
        self.stream.flush()
