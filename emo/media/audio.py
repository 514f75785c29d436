"""Audio decoding with PyAV: any container/codec -> mono float32 at the model's sample rate."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

SILENCE_PEAK = 1e-4  # peak amplitude under which a track is treated as silent


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


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Decode, downmix to mono and resample to `sample_rate` -> float32 samples; refuses unusable tracks."""
    import av

    path = Path(path)
    container = _open(path)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    try:
        with container:
            for frame in container.decode(audio=0):
                raw = frame.to_ndarray()
                if raw.dtype.kind == "f" and not np.isfinite(raw).all():
                    raise InputError(f"audio {path} contains NaN or infinite samples")
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    except av.error.FFmpegError as e:
        raise InputError(f"audio {path} is corrupt or truncated ({e.__class__.__name__})") from None
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise InputError(f"audio {path} holds no samples")
    if not np.isfinite(samples).all():
        raise InputError(f"audio {path} contains NaN or infinite samples")
    if np.abs(samples).max() < SILENCE_PEAK:
        raise InputError(f"audio {path} is silent")
    return samples
