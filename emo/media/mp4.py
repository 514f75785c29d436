"""Streaming MP4 output with PyAV: H.264 (yuv420p) video written clip by clip, the original audio as AAC.

The file is written under a temporary name beside the target and renamed only when complete, so an error or
Ctrl-C never leaves a partial video behind.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError


def check_output_path(path: str | Path) -> Path:
    """Refuse an output whose directory is missing or not writable before any work is done."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output directory is not writable: {parent}")
    if path.is_dir():
        raise InputError(f"output path is a directory: {path}")
    return path


def temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


class Mp4Writer:
    """with Mp4Writer(out, fps, size, audio_source) as w: w.write(frames_uint8) ... (renamed to `out` on success)."""

    def __init__(self, path: str | Path, fps: int, size: int, audio_source: str | Path | None, crf: int = 18):
        self.path = check_output_path(path)
        self.tmp = temporary_sibling(self.path)
        self.fps, self.size, self.audio_source, self.crf = fps, size, audio_source, crf
        self.frames_written = 0
        self._container = None

    def __enter__(self) -> "Mp4Writer":
        import av

        self._container = av.open(str(self.tmp), mode="w", format="mp4")
        v = self._container.add_stream("libx264", rate=self.fps)
        v.width = v.height = self.size
        v.pix_fmt = "yuv420p"
        v.options = {"crf": str(self.crf), "preset": "medium"}
        self._video = v
        self._audio = None
        if self.audio_source is not None:  # every stream must exist before the header is written
            with av.open(str(self.audio_source)) as src:
                a = src.streams.audio[0]
                self._audio_rate = a.rate or 48000
                self._audio_layout = "mono" if a.channels == 1 else "stereo"
            self._audio = self._container.add_stream("aac", rate=self._audio_rate, layout=self._audio_layout)
        return self

    def write(self, frames: np.ndarray) -> None:
        """frames (n, H, W, 3) uint8 RGB."""
        import av

        for rgb in frames:
            for packet in self._video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                self._container.mux(packet)
            self.frames_written += 1

    def _mux_audio(self) -> None:
        import av

        out = self._audio
        with av.open(str(self.audio_source)) as src:
            resampler = av.AudioResampler(format="fltp", layout=self._audio_layout, rate=self._audio_rate)
            for frame in src.decode(audio=0):
                for f in resampler.resample(frame):
                    for packet in out.encode(f):
                        self._container.mux(packet)
            for f in resampler.resample(None):
                for packet in out.encode(f):
                    self._container.mux(packet)
            for packet in out.encode(None):
                self._container.mux(packet)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                for packet in self._video.encode(None):
                    self._container.mux(packet)
                if self._audio is not None:
                    self._mux_audio()
            self._container.close()
        finally:
            if exc_type is None and self.tmp.exists():
                os.replace(self.tmp, self.path)
            else:
                self.tmp.unlink(missing_ok=True)
