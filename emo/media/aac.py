"""The audio-track policy of every MP4 this package writes: the voice as AAC, at a rate AAC can encode.

The finished video (mp4.Mp4Writer) and the streamed one (emo.serve.fmp4) both ask `aac_track` how to write the
source's voice, so a source at any rate (12,345 Hz, 4 kHz, 192 kHz) gives the same track in both.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The sampling rates of MPEG-4 audio (AAC); used when the encoder does not list its own.
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def aac_rate(rate: int | None) -> int:
    """The rate the AAC track is written at: the source's when AAC has it, else the next higher one (the highest,
    96 kHz, above that): 44.1 / 48 kHz stay as they are, 12,345 Hz becomes 16 kHz, 192 kHz becomes 96 kHz."""
    import av

    rates = sorted(av.Codec("aac", "w").audio_rates or AAC_RATES)
    if not rate:
        return 48000
    return next((r for r in rates if r >= rate), rates[-1])


@dataclass(frozen=True)
class AacTrack:
    rate: int  # what the source is resampled to and the track is encoded at
    channels: int  # 1 or 2 (anything with more channels is mixed down to stereo)

    @property
    def layout(self) -> str:
        return "mono" if self.channels == 1 else "stereo"


def aac_track(source: str | Path) -> AacTrack:
    """How the first audio track of `source` is written into an MP4."""
    import av

    with av.open(str(source)) as src:
        a = src.streams.audio[0]
        return AacTrack(aac_rate(a.rate), 1 if a.channels == 1 else 2)
