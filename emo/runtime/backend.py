"""The one protocol every backend implements, and the eager torch backend (the reference the others are held to).

A backend turns prepared inputs into tensors; the renderer owns everything else (clip chaining, noise, the
sampling loop, trimming, encoding), so every backend samples with the same host code. What a backend computes,
by rate:

  once per video   audio_features(waveform, frames)          -> (frames, layers, hidden) float32, host
                   prepare_video(portrait, motion_frames)    -> VideoConditioning
  once per clip    prepare_clip(video, motion_pixels, windows) -> ClipConditioning
                   decode_split(latents, tail)               -> (tail frames now, all frames later)
  once per step    step(clip, StepInputs, StepPlan)          -> noise_pred (1, 4, f, h, w)

A step's plan says whether both CFG halves run (the inputs' sample then has batch 2) or the cond half alone
(batch 1), and whether deep features are stored or reused (DeepCache: a backend keeps the features of the last
"store" step for the "reuse" steps after it; every clip's first step stores).

The conditioning and step inputs (`emo.sampling.conditioning`) carry the denoiser IO spec's names: `feed()` gives
IO-spec name -> tensor, so a graph backend (onnxruntime, TensorRT) binds them by name and a torch backend reads
their fields; their CFG halves are assembled for every backend by `emo.sampling.guidance`. A backend may keep them
in any form it likes between calls (static buffers, device copies); the renderer only hands back what the backend
returned. The step plan (`emo.sampling.step_plan`) says how the step runs; a backend refuses one it does not
implement.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch

from ..checkpoints.model_dir import Models
from ..config import ModelConfig
from ..errors import InputError
from ..manifest import Manifest
from ..preprocess.portrait import Portrait
from ..sampling.conditioning import ClipConditioning, StepInputs, VideoConditioning
from ..sampling.latents import decode_frames
from ..sampling.step_plan import StepPlan
from ..sampling.torch_model import planned_step, prepare_clip, prepare_video

DecodedClip = tuple[torch.Tensor, Callable[[], torch.Tensor]]
"""(the last `tail` frames (tail, 3, H, W) in [0, 1] on the backend's device, needed at once as the next clip's
motion frames; a call returning all f frames as float32 (f, H, W, 3) in [0, 1] on the host)."""


class Backend(Protocol):
    name: str  # as the CLI names it: torch, torch-fast, onnxruntime, tensorrt
    cfg: ModelConfig
    device: torch.device  # where the renderer keeps latents and motion frames
    dtype: torch.dtype  # their dtype (the sampler runs in it)
    precision: str  # what the model computes in: fp32, fp16, bf16 (torch), the directory's (graph backends)
    manifest: Manifest | None  # the export or plan directory's manifest; None for the torch backends
    captures: int | None  # static steps built so far (one per new shape); None where steps are not captured
    pipelined: bool  # True: decode_split may return before decoding ends; the renderer then yields a clip late

    def audio_features(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Normalised 16 kHz waveform (S,) -> (num_frames, layers, hidden) float32 on the host."""

    def prepare_video(self, portrait: Portrait, motion_frames: int) -> VideoConditioning:
        """Everything constant across the clips of one video (tokens, face feature, masks, reference K/V)."""

    def prepare_clip(self, video: VideoConditioning, motion_pixels: torch.Tensor, windows: torch.Tensor
                     ) -> ClipConditioning:
        """motion_pixels (n, 3, H, W) in [-1, 1] on `device`; windows (f, 5, layers, hidden) float32 on the host."""

    def step(self, clip: ClipConditioning, inputs: StepInputs, plan: StepPlan) -> torch.Tensor:
        """One denoising step as `plan` says -> noise_pred (1, 4, f, h, w) on `device` in `dtype`; ValueError for
        a plan this backend does not implement."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (1, 4, f, h, w) -> frames (f, 3, H, W) in [0, 1] on `device`, all decoded before it returns."""

    def decode_split(self, latents: torch.Tensor, tail: int) -> DecodedClip:
        """latents (1, 4, f, h, w) -> see DecodedClip."""


def host_frames(frames: torch.Tensor) -> torch.Tensor:
    """Frames (f, 3, H, W) in [0, 1] -> float32 (f, H, W, 3) on the host, contiguous (ready for an encoder)."""
    return frames.permute(0, 2, 3, 1).float().contiguous().cpu()  # f c h w -> f h w c


def decoded_now(frames: torch.Tensor, tail: int) -> DecodedClip:
    """The synchronous DecodedClip of frames (f, 3, H, W) decoded already."""
    host = host_frames(frames)
    return frames[frames.shape[0] - tail:], lambda: host


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


PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def precision_name(dtype: torch.dtype) -> str:
    """torch.float16 -> "fp16" (a dtype without a precision flag keeps torch's name: "float64")."""
    return next((name for name, dt in PRECISIONS.items() if dt == dtype), str(dtype).removeprefix("torch."))


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    dt = PRECISIONS.get(dtype, dtype)
    if not isinstance(dt, torch.dtype):
        raise InputError(f"unknown dtype {dtype!r} (choose fp32, fp16 or bf16)")
    if dt == torch.float16 and device.type == "cpu":
        raise InputError("fp16 needs a GPU (--device cuda); use fp32 or bf16 on the CPU")
    return dt


class TorchBackend:
    """Eager PyTorch on any device: the same modules and functions the golden tests check.

    On CUDA, cuDNN picks its convolution algorithms by timing them (`cudnn.benchmark`: a render repeats a few
    fixed shapes); `channels_last` stores the convolution weights (and so their activations) NHWC, which the
    tensor-core convolutions prefer (opt-in: it works on any device, but only pays on a GPU). The eager CPU
    path, where the golden numbers are made, uses neither.
    """

    name = "torch"
    manifest = None
    captures = None
    pipelined = False  # decode_split returns finished frames
    decode_batch = 4  # frames a VAE decode call

    def __init__(self, models: Models, device: str | torch.device = "auto", dtype: str | torch.dtype = "fp32",
                 channels_last: bool = False):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.precision = precision_name(self.dtype)
        self.models = models.to(self.device, self.dtype)
        if channels_last:
            for module in (self.models.net, self.models.vae):
                module.to(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.cfg = models.cfg

    @torch.no_grad()
    def audio_features(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.models.audio_encoder(waveform, num_frames).float().cpu()

    @torch.no_grad()
    def prepare_video(self, portrait: Portrait, motion_frames: int) -> VideoConditioning:
        p, dev, dt = portrait, self.device, self.dtype
        return prepare_video(self.models.net, self.models.vae, self.cfg, p.pixels.to(dev, dt), p.face_emb.to(dev, dt),
                             p.face_region.to(dev, dt), [m.to(dev, dt) for m in p.masks], motion_frames)

    @torch.no_grad()
    def prepare_clip(self, video: VideoConditioning, motion_pixels: torch.Tensor, windows: torch.Tensor
                     ) -> ClipConditioning:
        tokens = self.models.net.audioproj(windows[None].to(self.device, self.dtype))[0]
        return prepare_clip(self.models.net, self.models.vae, self.cfg, video, motion_pixels, tokens)

    _deep: torch.Tensor | None = None  # the deep features of the last "store" step

    @torch.no_grad()
    def step(self, clip: ClipConditioning, inputs: StepInputs, plan: StepPlan) -> torch.Tensor:
        out, self._deep = planned_step(self.models.net.denoising_unet, clip, inputs, plan, self._deep)
        return out

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return decode_frames(self.models.vae, latents, self.cfg.vae.scaling_factor, self.decode_batch)

    def decode_split(self, latents: torch.Tensor, tail: int) -> DecodedClip:
        return decoded_now(self.decode(latents), tail)
