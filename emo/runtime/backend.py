"""What a renderer needs from a backend, and the eager torch backend (the reference every other one is held to).

A backend turns prepared inputs into tensors; the renderer owns everything else (clip chaining, noise, the DDIM
loop, trimming, encoding), so every backend samples with the same host code.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import torch

from ..config import ModelConfig, RunConfig
from ..errors import InputError
from ..preprocess.portrait import Portrait
from ..sampling.clip import decode_frames, guided_prediction, prepare_clip, prepare_video
from .models import Models


class Backend(Protocol):
    name: str
    pipelined: bool  # True: decode_split may return before decoding ends, so the renderer yields a clip late
    cfg: ModelConfig
    device: torch.device  # where the host-side tensors (latents, motion frames) live
    dtype: torch.dtype  # their dtype

    def audio_features(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Normalised, clip-padded 16 kHz waveform (S,) -> (num_frames, layers, hidden) float32 on the CPU."""

    def prepare_video(self, portrait: Portrait, motion_frames: int) -> Any:
        """Everything constant across the clips of one video (reference K/V, tokens, face feature, masks)."""

    def prepare_clip(self, video: Any, motion_pixels: torch.Tensor, windows: torch.Tensor) -> Any:
        """motion_pixels (n, 3, H, W) in [-1, 1]; windows (f, 5, layers, hidden) -> the clip's conditioning."""

    def predict(self, clip: Any, latents: torch.Tensor, t: int, run: RunConfig) -> torch.Tensor:
        """Guided prediction for latents (1, 4, f, h, w) at timestep t."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (1, 4, f, h, w) -> frames (f, 3, H, W) float32 in [0, 1]."""

    def decode_split(self, latents: torch.Tensor, tail: int) -> tuple[torch.Tensor, Callable[[], torch.Tensor]]:
        """-> (the last `tail` frames, needed at once as the next clip's motion frames; a call giving all f frames).
        A backend with `pipelined = True` may still be decoding the others when this returns."""


def decode_split(backend: Backend, latents: torch.Tensor, tail: int) -> tuple[torch.Tensor, Callable[[], torch.Tensor]]:
    """The synchronous decode_split: everything decoded now."""
    frames = backend.decode(latents)
    return frames[frames.shape[0] - tail:], lambda: frames


def resolve_device(device: str | torch.device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r} (auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda requested but no CUDA GPU is available")
    return dev


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(dtype, dtype)
    if not isinstance(dt, torch.dtype):
        raise InputError(f"unknown dtype {dtype!r} (choose fp32, fp16 or bf16)")
    if dt == torch.float16 and device.type == "cpu":
        raise InputError("fp16 needs a GPU (--device cuda); use fp32 or bf16 on the CPU")
    return dt


class TorchBackend:
    """Eager PyTorch on any device: the same modules and functions the golden tests check."""

    name = "torch"
    pipelined = False  # decode_split returns finished frames
    decode_batch = 4  # frames a VAE decode call

    def __init__(self, models: Models, device: str | torch.device = "auto", dtype: str | torch.dtype = "fp32"):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.models = models.to(self.device, self.dtype)
        self.cfg = models.cfg

    @torch.no_grad()
    def audio_features(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.models.audio_encoder(waveform, num_frames).float().cpu()

    @torch.no_grad()
    def prepare_video(self, portrait: Portrait, motion_frames: int) -> Any:
        p, dev, dt = portrait, self.device, self.dtype
        return prepare_video(self.models.net, self.models.vae, self.cfg, p.pixels.to(dev, dt), p.face_emb.to(dev, dt),
                             p.face_region.to(dev, dt), [m.to(dev, dt) for m in p.masks], motion_frames)

    @torch.no_grad()
    def prepare_clip(self, video: Any, motion_pixels: torch.Tensor, windows: torch.Tensor) -> Any:
        tokens = self.models.net.audioproj(windows[None].to(self.device, self.dtype))[0]
        return prepare_clip(self.models.net, self.models.vae, self.cfg, video, motion_pixels, tokens)

    @torch.no_grad()
    def predict(self, clip: Any, latents: torch.Tensor, t: int, run: RunConfig) -> torch.Tensor:
        scale = torch.tensor(run.motion_scale, dtype=self.dtype, device=self.device)
        return guided_prediction(self.models.net, clip, latents, t, run.guidance_scale, scale)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return decode_frames(self.models.vae, latents, self.cfg.vae.scaling_factor, self.decode_batch).float()

    def decode_split(self, latents: torch.Tensor, tail: int) -> tuple[torch.Tensor, Callable[[], torch.Tensor]]:
        return decode_split(self, latents, tail)
