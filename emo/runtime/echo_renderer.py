"""The EchoMimic renderer: the same Renderer API (prepare / stream / render, load once, render many), with
EchoMimic's conditioning and its faithful sampling mode — the whole video denoised at once in context windows.

Faithful means memory and time to the first frame grow with the video's length: every frame's latents, audio
tokens and the prediction sums live until the last step (about 0.3 MB a frame at 512² in float32, ~0.45 GB a
minute at 24 fps, beside the constant working set of one window), and frames leave only after the last step,
decoded a few at a time. Backends: eager torch (`EchoTorchBackend`, any device) or the graphs of an EchoMimic
export on ONNX Runtime (`echo_graph_backend`); both run the same window loop (`sample_video`).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..checkpoints.echomimic_dir import EchoMimicModels
from ..config import ECHOMIMIC_RUNS, PRESETS, RunConfig
from ..errors import InputError
from ..geometry import Geometry
from ..media.audio import load_audio
from ..preprocess.echo_face import EchoPortrait, echo_portrait
from ..preprocess.image import load_image
from ..sampling.context_windows import ContextWindows
from ..sampling.echo_video import (
    EchoConditioning,
    Predict,
    echo_conditioning,
    initial_noise,
    sample_video,
    torch_predictor,
)
from ..sampling.latents import decode_frames
from ..sampling.sampler import make_sampler
from ..validation import check_seed
from .backend import host_frames, precision_name, resolve_device, resolve_dtype
from .renderer import Interrupt, Progress, Renderer, _checked, _untimed


class EchoTorchBackend:
    """Eager torch for an EchoMimic model (the reference the golden tests check)."""

    name = "torch"
    manifest = None
    captures = None
    pipelined = False
    decode_batch = 4

    def __init__(self, models: EchoMimicModels, device: str | torch.device = "auto",
                 dtype: str | torch.dtype = "fp32"):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.precision = precision_name(self.dtype)
        self.models = models.to(self.device, self.dtype)
        self.cfg = models.cfg
        self.family = models.family

    @torch.no_grad()
    def audio_tokens(self, samples: np.ndarray, fps: int) -> torch.Tensor:
        """16 kHz samples -> whisper tokens per video frame (F, 50, 384), float32 on the host."""
        from ..preprocess.whisper_features import whisper_chunks, whisper_features

        return whisper_chunks(whisper_features(self.models.audio_encoder, samples), fps).float().cpu()

    @torch.no_grad()
    def conditioning(self, ref_pixels: torch.Tensor, face_mask: torch.Tensor, tokens: torch.Tensor
                     ) -> EchoConditioning:
        """ref_pixels (3, H, W) in [-1, 1]; face_mask (1, H, W); tokens (F, t, c) -> the video's conditioning."""
        m = self.models
        return echo_conditioning(m.net, m.vae, self.cfg.vae.scaling_factor, ref_pixels, face_mask, tokens)

    def predictor(self, cond: EchoConditioning, guidance_scale: float) -> Predict:
        return torch_predictor(self.models.net.denoising_unet, cond, guidance_scale)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (1, 4, f, h, w) -> frames (f, 3, H, W) in [0, 1]."""
        return decode_frames(self.models.vae, latents, self.cfg.vae.scaling_factor, self.decode_batch)


@dataclass
class EchoPrepared:
    portrait: EchoPortrait
    tokens: torch.Tensor  # (F, 50, 384) whisper tokens of every latent frame, host float32
    frames: int  # frames in the output: the latent frames, cut to the audio's length
    audio_path: Path


def echo_run_problem(run: RunConfig, speed: str | None = None) -> str | None:
    """The setting an EchoMimic render cannot take, as a one-line message (None: fine)."""
    if speed is not None:
        return "speed presets are Hallo's (EchoMimic's fast setting is --family echomimic-acc)"
    if run.motion_frames:
        return "EchoMimic has no motion frames (use --motion-frames 0)"
    if run.cache_interval > 1:
        return "deep-feature reuse (--cache-interval) is not available for EchoMimic"
    if run.guidance_interval != (0.0, 1.0):
        return "a guidance interval is not available for EchoMimic"
    if run.first_clip_frames is not None:
        return "EchoMimic denoises the whole video at once: --first-clip-frames does not apply"
    return None


class EchoRenderer(Renderer):
    """An EchoMimic model behind the Renderer API. Faces are found by our detector (EchoMimic's own script uses
    MTCNN); EchoMimic's mask (+10 %) and square crop (+50 %) are then built from the largest face. A vocal
    separator, when given, runs before the audio encoder as for Hallo (EchoMimic itself has none)."""

    def preset_run(self) -> RunConfig:
        run = ECHOMIMIC_RUNS[self.backend.family]
        preset = PRESETS.get(self.cfg.name)
        return run if preset is None else dataclasses.replace(run, size=preset.run.size)

    def settings(self, **options) -> RunConfig:
        from ..config import RunOptions

        if options.get("speed") is not None:
            raise InputError(echo_run_problem(self.preset_run(), options["speed"]))
        return RunOptions(**options).apply(self.preset_run(), self.cfg)

    def prepare(self, image: str | Path, audio: str | Path, run: RunConfig) -> EchoPrepared:
        run.validate(self.cfg)
        problem = echo_run_problem(run)
        if problem:
            raise InputError(problem)
        rgb = load_image(image)
        faces = self.detector.detect(rgb)
        if not faces:
            raise InputError(f"no face found in {image}")
        portrait = echo_portrait(rgb, faces[0].box, run.size, len(faces))
        if run.sample_rate != 16000:
            raise InputError(f"EchoMimic's audio encoder takes 16 kHz audio (got a sample rate of {run.sample_rate})")
        if self.vocal_separator is not None:
            samples = self.vocal_separator.load_vocals(audio, run.sample_rate)
        else:
            samples = load_audio(audio, run.sample_rate)
        if samples.shape[0] < run.sample_rate / run.fps:
            raise InputError(f"audio {audio} is shorter than one video frame "
                             f"({1000 * samples.shape[0] / run.sample_rate:.1f} ms)")
        with self._model_turn(reentrant=True):
            tokens = self.backend.audio_tokens(samples, run.fps)
        frames = min(tokens.shape[0], math.ceil(samples.shape[0] * run.fps / run.sample_rate))
        return EchoPrepared(portrait, tokens, frames, Path(audio))

    def windows(self, run: RunConfig) -> ContextWindows:
        return ContextWindows(run.frames, run.context_overlap)

    def stream(self, prepared: EchoPrepared, run: RunConfig, seed: int = 0,
               progress: Callable[[Progress], None] | None = None, interrupt: Interrupt | None = None
               ) -> Iterator[np.ndarray]:
        """Yield the video's frames as float32 (k, H, W, 3) in [0, 1], a few at a time after the last step."""
        check_seed(seed)
        be, cfg = self.backend, self.cfg
        frames = prepared.tokens.shape[0]
        latent = Geometry.of(cfg, run.size).latent
        timer = _checked(self.timer or _untimed, interrupt)
        sampler = make_sampler(cfg.scheduler, run.sampler, run.steps)
        noise = initial_noise((1, cfg.vae.latent_channels, frames, latent, latent), torch.Generator().manual_seed(seed))
        start = time.perf_counter()
        with self._model_turn(), torch.no_grad():
            p, dev, dt = prepared.portrait, be.device, be.dtype
            with timer("reference"):
                cond = be.conditioning(p.pixels.to(dev, dt), p.face_mask.to(dev, dt), prepared.tokens.to(dev, dt))

            def on_step(i: int) -> None:
                if progress is not None:
                    progress(Progress(0, 1, i + 1, run.steps, 0, prepared.frames, time.perf_counter() - start))

            def on_window() -> None:  # each window's evaluation is a point where a render can be stopped
                if interrupt is not None:
                    interrupt("step")

            guided = run.guidance_scale != 1.0
            latents = sample_video(be.predictor(cond, run.guidance_scale), sampler, noise.to(dev, dt),
                                   self.windows(run), guided, on_step, on_window)
            for a in range(0, prepared.frames, be.decode_batch):
                b = min(a + be.decode_batch, prepared.frames)
                with timer("decode"):
                    out = host_frames(be.decode(latents[:, :, a:b]))
                with timer("consumer"):
                    yield out.numpy()

    def evaluations(self, prepared: EchoPrepared, run: RunConfig) -> float:
        """UNet frame-evaluations: every step evaluates each window's frames, once per CFG half."""
        halves = 2 if run.guidance_scale != 1.0 else 1
        return float(run.steps * halves * self.windows(run).evaluations(prepared.tokens.shape[0]))
