"""Test media made on the fly with PyAV / PIL: voices in many containers, portraits in many formats."""
from __future__ import annotations

import math
from fractions import Fraction
from importlib import resources
from pathlib import Path

import av
import numpy as np
from PIL import Image

PORTRAIT = Path(str(resources.files("emo") / "assets" / "portrait.jpg"))
SPEECH = Path(str(resources.files("emo") / "assets" / "speech.wav"))


def voice(seconds: float, rate: int = 16000, channels: int = 1) -> np.ndarray:
    """A speech-like signal (harmonics with syllable-rate envelope): (channels, samples) float32."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) * 0.2
    return np.stack([x * (1 - 0.1 * c) for c in range(channels)]).astype(np.float32)


def write_audio(path: Path, samples: np.ndarray, rate: int, codec: str, fmt: str | None = None) -> Path:
    """samples (channels, n) float32 -> an audio file encoded with `codec`."""
    channels = samples.shape[0]
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        sample_fmt = stream.codec_context.codec.audio_formats[0].name
        frame_size = stream.codec_context.frame_size or 1024
        for i in range(0, samples.shape[1], frame_size):
            chunk = np.ascontiguousarray(samples[:, i:i + frame_size])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = i
            frame.time_base = Fraction(1, rate)
            for f in av.AudioResampler(format=sample_fmt, layout=layout, rate=rate).resample(frame):
                for p in stream.encode(f):
                    out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    return path


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000, codec: str = "pcm_s16le") -> Path:
    return write_audio(path, samples, rate, codec, "wav")


def write_video_with_audio(path: Path, seconds: float) -> Path:
    """An MP4 with an H.264 video track and an AAC voice track."""
    rate = 44100
    samples = voice(seconds, rate, 2)
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=25)
        v.width = v.height = 64
        v.pix_fmt = "yuv420p"
        a = out.add_stream("aac", rate=rate, layout="stereo")
        for i in range(math.ceil(seconds * 25)):
            for p in v.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), i % 255, np.uint8), format="rgb24")):
                out.mux(p)
        for p in v.encode(None):
            out.mux(p)
        for i in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, i:i + 1024]), format="fltp",
                                               layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = rate, i, Fraction(1, rate)
            for p in a.encode(frame):
                out.mux(p)
        for p in a.encode(None):
            out.mux(p)
    return path


def portrait() -> Image.Image:
    return Image.open(PORTRAIT).convert("RGB")


def make_media(root: Path, seconds: float) -> Path:
    """root/media with face.png (the demo portrait) and voice.wav (`seconds` of speech-like sound)."""
    d = root / "media"
    d.mkdir()
    portrait().save(d / "face.png")
    write_wav(d / "voice.wav", voice(seconds))
    return d


def two_faces() -> Image.Image:
    """The portrait twice, the right copy smaller."""
    big = portrait()
    small = big.resize((300, 300))
    canvas = Image.new("RGB", (big.width + small.width + 40, big.height), (128, 128, 128))
    canvas.paste(big, (0, 0))
    canvas.paste(small, (big.width + 40, 100))
    return canvas


def no_face(size: int = 256) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size]
    return Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8))


def probe(path: Path) -> dict:
    """Codec names, pixel format, frame count and durations of an MP4."""
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        frames = sum(1 for _ in c.decode(video=0))
        return dict(video_codec=v.codec_context.name, pix_fmt=v.codec_context.pix_fmt, audio_codec=a.codec_context.name,
                    frames=frames, fps=float(v.average_rate), audio_seconds=float(a.duration * a.time_base),
                    size=(v.codec_context.width, v.codec_context.height))
