"""Streaming MP4 output with PyAV: H.264 (yuv420p) video written clip by clip, the original audio as AAC.

Every encoder is opened (and the header written) when the writer is entered, before any frame is rendered, so an
encoder that cannot run fails first. The file is written under a temporary name beside the target and renamed only
once it is complete and closed (`outputs.atomic_output`), so an error, a full disk, Ctrl-C or a termination
signal never leaves a partial video behind.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from .aac import aac_track
from .outputs import OutputWriter, atomic_output, output_target


class Mp4Writer(OutputWriter):
    """with Mp4Writer(out, fps, size, audio_source) as w: w.write(frames_uint8) ... (renamed to `out` on success).

    `out` may be a symlink: the file it points to is replaced and the link kept."""

    def __init__(self, path: str | Path, fps: int, size: int, audio_source: str | Path | None, crf: int = 18):
        self.path = Path(path)
        self.target = output_target(self.path)
        self.fps, self.size, self.audio_source, self.crf = fps, size, audio_source, crf
        self.frames_written = 0

    @contextmanager
    def _open(self) -> Iterator["Mp4Writer"]:
        import av

        with atomic_output(self.target) as tmp:
            self._container = av.open(str(tmp), mode="w", format="mp4")
            try:
                self._add_streams()
                self._container.start_encoding()  # opens every encoder, writes the header
                yield self
                self._finish()
            except BaseException:
                try:
                    self._container.close()
                except Exception:  # the first error is the one to report; the file is deleted anyway
                    pass
                raise
            self._container.close()  # writes the index (moov): the file is complete only after this

    def _add_streams(self) -> None:
        v = self._container.add_stream("libx264", rate=self.fps)
        v.width = v.height = self.size
        v.pix_fmt = "yuv420p"
        v.options = {"crf": str(self.crf), "preset": "medium"}
        self._video = v
        self._audio = None
        if self.audio_source is not None:  # every stream must exist before the header is written
            track = aac_track(self.audio_source)
            self._audio_rate, self._audio_layout = track.rate, track.layout
            self._audio = self._container.add_stream("aac", rate=self._audio_rate, layout=self._audio_layout)

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

    def _finish(self) -> None:
        for packet in self._video.encode(None):
            self._container.mux(packet)
        if self._audio is not None:
            self._mux_audio()
