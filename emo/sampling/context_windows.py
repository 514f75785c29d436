"""Context windows: how EchoMimic denoises a whole video with a UNet trained on short clips.

Each step splits the video's frames into windows of `size` frames that overlap by `overlap` (the "uniform"
schedule, closed loop: the last windows wrap around to the first frames), runs the denoiser on every window and
averages the predictions of frames that more than one window covered. Step i shifts every window by 2·i frames
(modulo the video's length), so that the seams move from step to step.

With the reference's settings (stride 1, schedule step 0) the uniform schedule reduces to windows starting every
size − overlap frames from frame 0 until the video's length is passed; a video no longer than one window is one
window of all its frames.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError


@dataclass(frozen=True)
class ContextWindows:
    size: int = 12  # frames per window
    overlap: int = 3  # frames shared by neighbouring windows
    shift: int = 2  # frames every window moves per step (EchoMimic's 2·i)

    def __post_init__(self):
        if self.size < 1:
            raise InputError(f"context windows need at least one frame (got {self.size})")
        if not 0 <= self.overlap < self.size:
            raise InputError(f"the context overlap must be in [0, {self.size}) frames (got {self.overlap})")

    def base(self, frames: int) -> list[list[int]]:
        """The windows of a video of `frames` frames before any shift: lists of frame indices."""
        if frames <= self.size:
            return [list(range(frames))]
        stride = self.size - self.overlap
        return [[j % frames for j in range(start, start + self.size)] for start in range(0, frames, stride)]

    def at_step(self, frames: int, step: int) -> list[list[int]]:
        """The windows of denoising step `step` (0-based)."""
        offset = self.shift * step
        return [[(j + offset) % frames for j in window] for window in self.base(frames)]

    def evaluations(self, frames: int) -> int:
        """Frame evaluations of one step for one guidance half: the frames of all windows, overlaps counted."""
        return sum(len(w) for w in self.base(frames))
