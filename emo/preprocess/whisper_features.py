"""Whisper audio features with EchoMimic's semantics: 30-second segments, trimmed, windowed per video frame.

EchoMimic computes one log-mel spectrogram of the whole 16 kHz track (100 frames a second; its -8 floor is set by
the loudest frame of the whole track), cuts it into segments of 3000 frames, zero-pads the last one to 3000, runs
the encoder on each and keeps, of each segment's 1500 steps, the first ⌊frames in the segment / 2⌋. N samples
give M = ⌊N / 160⌋ mel frames and 1500·⌊M / 3000⌋ + ⌊(M mod 3000) / 2⌋ feature steps (50 a second), each the
stack of the encoder's hidden states. Video frame i then sees the 10 steps [c - 4, c + 6) around c = ⌊50 i / fps⌋,
clamped to the track, as 10·(layers + 1) tokens (50 × 384 for whisper-tiny).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..config import MAX_FPS
from ..errors import InputError
from ..models.whisper_encoder import WhisperEncoder
from ..validation import in_range

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160  # samples per mel frame: 100 frames a second
N_MELS = 80
SEGMENT_FRAMES = 3000  # mel frames per encoder segment (30 s)
FEATURE_RATE = 50  # feature steps a second (conv2 halves the mel rate)
WINDOW = (4, 6)  # steps before and after (exclusive) a video frame's centre step


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep,
                    f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=1)
def mel_filterbank() -> torch.Tensor:
    """(80, 201) float32 Slaney-normalised triangles over 0-8 kHz: the bits of librosa.filters.mel(sr=16000,
    n_fft=400, n_mels=80) that whisper ships, reproduced by rounding in the same two places (the triangles to float32,
    then their product with the area normalisation)."""
    fft_hz = np.fft.rfftfreq(N_FFT, d=1.0 / SAMPLE_RATE)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.float64(0.0)), _hz_to_mel(np.float64(SAMPLE_RATE / 2)), N_MELS + 2))
    width = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]  # (mels + 2, bins)
    weights = np.maximum(0.0, np.minimum(-ramps[:-2] / width[:-1, None], ramps[2:] / width[1:, None]))
    weights = (weights + 0.0).astype(np.float32)  # + 0.0 turns -0.0 into 0.0, as the shipped table has it
    weights *= 2.0 / (edges[2:] - edges[:-2])[:, None]  # in float64, stored back into float32
    return torch.from_numpy(weights)


def check_samples(samples: np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Mono float samples in [-1, 1] at 16 kHz -> float32 tensor, or a one-line InputError."""
    if sample_rate != SAMPLE_RATE:
        raise InputError(f"whisper features need {SAMPLE_RATE} Hz audio (got {sample_rate} Hz)")
    x = torch.as_tensor(samples)
    if x.ndim != 1:
        raise InputError(f"whisper features need mono audio, one channel of samples (got shape {tuple(x.shape)})")
    if x.numel() == 0:
        raise InputError("audio holds no samples")
    x = x.to(torch.float32)
    if not torch.isfinite(x).all():
        raise InputError("audio contains NaN or infinite samples")
    if feature_step_count(x.numel()) == 0:
        raise InputError(f"audio is too short for whisper features ({1000 * x.numel() / SAMPLE_RATE:.1f} ms; "
                         f"one 20 ms step needs {2 * HOP} samples)")
    return x


def feature_step_count(num_samples: int) -> int:
    """Feature steps EchoMimic keeps for a track of num_samples samples (see the module docstring)."""
    mel_frames = num_samples // HOP
    full, rest = divmod(mel_frames, SEGMENT_FRAMES)
    return full * (SEGMENT_FRAMES // 2) + rest // 2


def log10_mel(padded: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """log10 power mel (80, stop - start) of mel frames [start, stop) of a track reflect-padded by n_fft / 2 at
    each end (the centred STFT's frames, computed for this range only)."""
    piece = padded[start * HOP:(stop - 1) * HOP + N_FFT]
    window = torch.hann_window(N_FFT, device=padded.device, dtype=padded.dtype)
    spec = torch.stft(piece, N_FFT, HOP, window=window, center=False, return_complex=True)  # (bins, frames)
    power = spec.abs() ** 2
    return (mel_filterbank().to(power.device, power.dtype) @ power).clamp(min=1e-10).log10()


def log_mel_segments(samples: torch.Tensor) -> list[torch.Tensor]:
    """The track's normalised log-mel, (80, ≤ 3000) per segment: floored 8 below the whole track's maximum and
    mapped by (x + 4) / 4."""
    mel_frames = samples.numel() // HOP  # the centred STFT's last frame is dropped
    padded = F.pad(samples[None, None], (N_FFT // 2, N_FFT // 2), mode="reflect")[0, 0]
    logs = [log10_mel(padded, a, min(a + SEGMENT_FRAMES, mel_frames)) for a in range(0, mel_frames, SEGMENT_FRAMES)]
    floor = max(seg.max() for seg in logs) - 8.0
    return [(torch.maximum(seg, floor) + 4.0) / 4.0 for seg in logs]


@torch.no_grad()
def whisper_features(encoder: WhisperEncoder, samples: np.ndarray | torch.Tensor, sample_rate: int = SAMPLE_RATE
                     ) -> torch.Tensor:
    """Mono 16 kHz samples in [-1, 1] -> EchoMimic's feature array (steps, layers + 1, n_state) on the encoder's
    device and in its dtype. The mel runs in float32 (float64 for a float64 encoder), the encoder in its own dtype
    (EchoMimic runs it in float16 on a GPU, float32 on a CPU)."""
    cfg = encoder.cfg
    if cfg.n_mels != N_MELS or cfg.n_ctx * 2 != SEGMENT_FRAMES:
        raise ValueError(f"EchoMimic features need an 80-mel encoder of {SEGMENT_FRAMES // 2} positions "
                         f"(got {cfg.n_mels} mels, {cfg.n_ctx} positions)")
    param = encoder.conv1.weight
    return segment_features(lambda mel: encoder(mel.to(param.dtype))[0], samples, sample_rate, param.device,
                            torch.promote_types(param.dtype, torch.float32))


def segment_features(encode: Callable[[torch.Tensor], torch.Tensor], samples: np.ndarray | torch.Tensor,
                     sample_rate: int = SAMPLE_RATE, device: torch.device | str = "cpu",
                     mel_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`whisper_features` with any encoder: `encode` takes one 30-s log-mel segment (1, 80, 3000) and returns its
    stacked hidden states (layers + 1, 1500, c) (torch modules or an exported graph)."""
    x = check_samples(samples, sample_rate).to(device, mel_dtype)
    pieces = []
    for mel in log_mel_segments(x):
        keep = mel.shape[1] // 2
        mel = F.pad(mel, (0, SEGMENT_FRAMES - mel.shape[1]))  # the last segment, zero-padded to 30 s
        states = encode(mel[None])  # (layers + 1, 1500, c)
        pieces.append(states[:, :keep].transpose(0, 1))  # states t c -> t states c
    return torch.cat(pieces)


def _check_fps(fps: float) -> None:
    in_range("fps", fps, 1, MAX_FPS)


def chunk_count(num_steps: int, fps: float) -> int:
    """Video frames EchoMimic makes windows for: frame i is made, and the loop stops after the first frame whose
    ⌊i · (50 / fps)⌋ passes num_steps — one or two frames beyond the audio's end."""
    _check_fps(fps)
    step, i = FEATURE_RATE / fps, 0
    while int(i * step) <= num_steps:
        i += 1
    return i + 1


def chunk_indices(num_steps: int, fps: float, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """(frames, 10) feature steps of video frames [start, stop) (default: all chunk_count frames): frame i reads
    steps ⌊50 i / fps⌋ - 4 ... + 5, clamped to [0, num_steps)."""
    if num_steps <= 0:
        raise ValueError("no feature steps to window")
    stop = chunk_count(num_steps, fps) if stop is None else stop
    _check_fps(fps)
    centres = torch.tensor([int(i * FEATURE_RATE / fps) for i in range(start, stop)], dtype=torch.long)
    return (centres[:, None] + torch.arange(-WINDOW[0], WINDOW[1])).clamp(0, num_steps - 1)


def whisper_chunks(features: torch.Tensor, fps: float, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Feature array (steps, layers + 1, c) -> per-frame tokens (frames, 10·(layers + 1), c) for video frames
    [start, stop): EchoMimic's feature2chunks, or a slice of it."""
    idx = chunk_indices(features.shape[0], fps, start, stop).to(features.device)
    frames = idx.shape[0]
    return features[idx].reshape(frames, -1, features.shape[-1])  # frames 10 states c -> frames (10 states) c
