"""Fragmented MP4 made clip by clip: what a client receives while a render is still running.

Each clip starts a key frame and a fragment (`moof` + `mdat`), so the bytes written so far always form a playable
MP4 (after the `ftyp` + empty `moov` header) and a player can start before the render ends. The voice is muxed as
AAC alongside, up to the end of the video written so far. The muxer emits a fragment when the next one begins,
so a clip's bytes come out when the next clip's first frame is encoded (or at close, for the last one).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from ..media.aac import aac_track
from ..media.audio import load_audio


class _Sink:
    """A write-only, non-seekable file for the muxer: what it wrote since the last take()."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


class FragmentedMp4:
    """enc = FragmentedMp4(fps, size, clip_frames, audio); enc.write(clip_uint8) -> bytes; ...; enc.close() -> bytes.

    H.264 (yuv420p, CRF 18, no B-frames or look-ahead, so frames leave the encoder as they come) with a key frame
    every `clip_frames` frames, and the voice track as AAC as every MP4 of this package writes it (media.aac)."""

    def __init__(self, fps: int, size: int, clip_frames: int, audio: str | Path, crf: int = 18):
        import av

        track = aac_track(audio)
        self._samples = load_audio(audio, track.rate, track.channels).reshape(track.channels, -1)  # float32
        self._rate, self._layout, self._fps = track.rate, track.layout, fps
        self._audio_done = self._frames = 0
        self._sink = _Sink()
        self._out = av.open(self._sink, mode="w", format="mp4",
                            options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})
        v = self._out.add_stream("libx264", rate=fps)
        v.width = v.height = size
        v.pix_fmt = "yuv420p"
        v.options = {"crf": str(crf), "preset": "medium", "tune": "zerolatency", "g": str(clip_frames),
                     "keyint_min": str(clip_frames), "sc_threshold": "0"}
        self._video = v
        self._audio = self._out.add_stream("aac", rate=self._rate, layout=self._layout)

    def write(self, frames: np.ndarray) -> bytes:
        """Encode one clip, (k, H, W, 3) uint8 RGB, and the voice up to its end -> the bytes ready to send."""
        import av

        for rgb in frames:
            for packet in self._video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                self._out.mux(packet)
        self._frames += len(frames)
        self._mux_audio(min(self._samples.shape[1], round(self._frames * self._rate / self._fps)))
        return self._sink.take()

    def _mux_audio(self, until: int) -> None:
        import av

        if until <= self._audio_done:
            return
        chunk = np.ascontiguousarray(self._samples[:, self._audio_done:until])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=self._layout)
        frame.sample_rate, frame.pts, frame.time_base = self._rate, self._audio_done, Fraction(1, self._rate)
        for packet in self._audio.encode(frame):
            self._out.mux(packet)
        self._audio_done = until

    def close(self) -> bytes:
        """Flush both encoders and the last fragment -> the remaining bytes."""
        for packet in self._video.encode(None):
            self._out.mux(packet)
        self._mux_audio(self._samples.shape[1])
        for packet in self._audio.encode(None):
            self._out.mux(packet)
        self._out.close()
        return self._sink.take()

    def abort(self) -> None:
        """Release the encoders without finishing the file (a cancelled or failed render)."""
        try:
            self._out.close()
        except Exception:  # the container may refuse to close half-written; nothing is kept anyway
            pass
