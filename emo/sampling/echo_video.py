"""EchoMimic's sampling: the whole video at once, denoised in context windows (`context_windows`).

Per step, every window of frames runs through the denoiser (both CFG halves when guided, the conditional half
alone at guidance 1) and is guided, the predictions of frames covered by several windows are averaged, and the
sampler steps the whole video. The loop takes the window's prediction as a callable (`Predict`), so torch modules
and exported graphs run the same loop. The unconditional half is EchoMimic's: zero audio tokens,
a zero face feature and no reference attention (its self-attention sees its own tokens only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..models.denoising_unet import DenoisingUNet
from ..models.echomimic import EchoMimicNet
from ..models.transformer import RefKV
from ..models.vae import VAE
from .context_windows import ContextWindows
from .guidance import with_uncond
from .latents import encode_latents
from .reference import as_recorded
from .sampler import Sampler
from .torch_model import combine


@dataclass
class EchoConditioning:
    ref_kv: list[RefKV]  # per spatial transformer: the reference image's keys, values (1, heads, l, d)
    face_feature: torch.Tensor  # (1, c0, h, w) face-locator output of the face mask
    audio_tokens: torch.Tensor  # (F, t, c) per video frame


# A window's prediction: (window latents (1, 4, f, h, w), t (1,), the window's frame indices, guided) -> the guided
# prediction (1, 4, f, h, w) (the cond half's alone when not guided). Torch modules or an exported denoiser graph.
Predict = Callable[[torch.Tensor, torch.Tensor, list[int], bool], torch.Tensor]


def echo_reference_kv(net: EchoMimicNet, latent: torch.Tensor) -> list[RefKV]:
    """Reference latent (1, 4, h, w) -> the one reference entry of every denoiser self-attention layer."""
    records = net.reference_unet(latent, None)  # no cross-attention while writing the reference
    return net.denoising_unet.reference_kv([as_recorded(r) for r in records])


def echo_conditioning(net: EchoMimicNet, vae: VAE, scaling: float, ref_pixels: torch.Tensor,
                      face_mask: torch.Tensor, audio_tokens: torch.Tensor) -> EchoConditioning:
    """ref_pixels (3, H, W) in [-1, 1]; face_mask (1, H, W) 0/1; audio_tokens (F, t, c)."""
    latent = encode_latents(vae, ref_pixels[None], scaling)
    return EchoConditioning(echo_reference_kv(net, latent), net.face_locator(face_mask[None]), audio_tokens)


def window_halves(cond: EchoConditioning, x: torch.Tensor, frames: list[int], guided: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The denoiser's per-window inputs for its CFG halves: sample (b, 4, f, h, w), audio tokens (b, f, t, c),
    face feature (b, c0, h, w); b = 2 ([uncond, cond]) when guided, else 1 (cond)."""
    audio = cond.audio_tokens[frames][None]  # (1, f, t, c)
    face = cond.face_feature
    if guided:
        return x.expand(2, -1, -1, -1, -1), with_uncond(audio), with_uncond(face)
    return x, audio, face


def echo_denoise(denoiser: DenoisingUNet, sample: torch.Tensor, t: torch.Tensor, audio: torch.Tensor,
                 face: torch.Tensor, ref_kv: list[RefKV]) -> torch.Tensor:
    """EchoMimic's denoiser call: Hallo's image tokens, masks, motion features and motion scale left empty; the
    one reference entry read by every cond frame -> the halves' outputs (b, 4, f, h, w)."""
    b, f = sample.shape[0], sample.shape[2]
    c_mid = denoiser.cfg.block_out_channels[-1]
    hm = sample.shape[-1] // 2 ** (len(denoiser.cfg.block_out_channels) - 1)
    no_motion = sample.new_zeros(b, 0, c_mid, hm, hm)
    no_tokens = sample.new_zeros(b, 0, denoiser.cfg.cross_attention_dim)
    ref_index = torch.zeros(f, dtype=torch.long, device=sample.device)  # one reference entry for every cond frame
    return denoiser(sample, t, no_tokens, audio, face, [], ref_kv, ref_index, no_motion, sample.new_ones(3))


def predict_window(denoiser: DenoisingUNet, cond: EchoConditioning, x: torch.Tensor, t: torch.Tensor,
                   frames: list[int], guided: bool) -> torch.Tensor:
    """x (1, 4, f, h, w): the window's latents -> the denoiser's output for its halves (b, 4, f, h, w), b = 2
    ([uncond, cond]) when guided else 1 (cond)."""
    sample, audio, face = window_halves(cond, x, frames, guided)
    return echo_denoise(denoiser, sample, t, audio, face, cond.ref_kv)


def torch_predictor(denoiser: DenoisingUNet, cond: EchoConditioning, guidance_scale: float) -> Predict:
    """The torch modules' window prediction, guided as the exported denoiser graph guides (`combine`)."""
    def predict(x: torch.Tensor, t: torch.Tensor, frames: list[int], guided: bool) -> torch.Tensor:
        out = predict_window(denoiser, cond, x, t, frames, guided)
        return combine(out, guidance_scale) if guided else out

    return predict


def sample_video(predict: Predict, sampler: Sampler, noise: torch.Tensor, windows: ContextWindows, guided: bool,
                 on_step: Callable[[int], None] | None = None, on_window: Callable[[], None] | None = None
                 ) -> torch.Tensor:
    """noise (1, 4, F, h, w), already clamped as the model expects -> final latents (1, 4, F, h, w).
    Guidance is linear, so averaging the windows' guided predictions equals guiding the averaged halves (the
    reference's order). on_window() before each window's evaluation (a render's interrupt point); on_step(i) after
    step i."""
    frames = noise.shape[2]
    state = sampler.start()
    latents = noise * sampler.init_noise_sigma
    for i, t in enumerate(sampler.timesteps):
        total = torch.zeros_like(latents)
        count = latents.new_zeros(1, 1, frames, 1, 1)
        for window in windows.at_step(frames, i):
            if on_window is not None:
                on_window()
            total[:, :, window] += predict(latents[:, :, window], t.reshape(1), window, guided)
            count[:, :, window] += 1
        latents = sampler.step(state, i, total / count, latents)
        if on_step is not None:
            on_step(i)
    return latents


def initial_noise(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """EchoMimic's starting latents: standard normal, clamped to ±1.5."""
    return torch.randn(shape, generator=generator).clamp(-1.5, 1.5)
