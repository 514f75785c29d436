"""Audio decoding with PyAV: any container/codec -> mono float32 at the model's sample rate."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

SILENCE_PEAK = 1e-4  # peak amplitude under which a track is treated as silent


class AudioTooLong(InputError):
    """A track longer than the caller's max_seconds, found by counting decoded samples (decoding stops there)."""

    def __init__(self, path: Path, max_seconds: float):
        super().__init__(f"audio {path} is longer than {max_seconds:g} s")
        self.max_seconds = max_seconds


def _open(path: Path):
    import av

    if not path.is_file():
        raise InputError(f"audio file not found: {path}")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read audio {path}: not a media file ({e.__class__.__name__})") from None
    if not container.streams.audio:
        container.close()
        raise InputError(f"{path} has no audio track")
    return container


def load_audio(path: str | Path, sample_rate: int = 16000, channels: int = 1,
               max_seconds: float | None = None) -> np.ndarray:
    """Decode, mix to `channels` (1: mono, 2: stereo) and resample to `sample_rate` -> float32 samples, (n,) for
    mono, (channels, n) otherwise; refuses unusable tracks. max_seconds: raise AudioTooLong as soon as the decoded
    samples pass it (counted, not taken from the container's header, which may lie), before decoding the rest."""
    import av

    path = Path(path)
    container = _open(path)
    resampler = av.AudioResampler(format="fltp", layout="mono" if channels == 1 else "stereo", rate=sample_rate)
    chunks: list[np.ndarray] = []
    seconds = 0.0
    try:
        with container:
            for frame in container.decode(audio=0):
                seconds += frame.samples / (frame.sample_rate or sample_rate)
                if max_seconds is not None and seconds > max_seconds:
                    raise AudioTooLong(path, max_seconds)
                raw = frame.to_ndarray()
                if raw.dtype.kind == "f" and not np.isfinite(raw).all():
                    raise InputError(f"audio {path} contains NaN or infinite samples")
                chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray() for f in resampler.resample(None))
    except av.error.FFmpegError as e:
        raise InputError(f"audio {path} is corrupt or truncated ({e.__class__.__name__})") from None
    samples = np.concatenate(chunks, axis=1).astype(np.float32) if chunks else np.zeros((channels, 0), np.float32)
    if samples.size == 0:
        raise InputError(f"audio {path} holds no samples")
    if not np.isfinite(samples).all():
        raise InputError(f"audio {path} contains NaN or infinite samples")
    if np.abs(samples).max() < SILENCE_PEAK:
        raise InputError(f"audio {path} is silent")
    return samples[0] if channels == 1 else samples


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Mono float32 samples from `rate` to `target` Hz with FFmpeg's resampler (the one load_audio uses)."""
    import av

    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32)[None], format="fltp", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=target)
    out = resampler.resample(frame) + resampler.resample(None)
    return np.concatenate([f.to_ndarray()[0] for f in out]).astype(np.float32)
