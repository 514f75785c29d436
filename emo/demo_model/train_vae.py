"""Stage 1: the VAE, trained for reconstruction of the training identities' frames.

L1 + L2 reconstruction (weighted ×4 around the mouth, the detail the lip-sync needs) through a sampled latent
and a small KL term; mostly on 64² windows (the network is convolutional; a quarter of the cost of whole frames),
every fourth step on whole frames so that the mid-block attention sees the full latent.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..config import VAEConfig
from ..models.vae import VAE
from .frames import frame_batch
from .state import LossLog, TrainState

KL_WEIGHT = 1e-6


def vae_loss(vae: VAE, pixels: torch.Tensor, weights: torch.Tensor, generator: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (loss, latent means) for pixels (B, 3, H, W) in [-1, 1]."""
    moments = vae.quant_conv(vae.encoder(pixels))
    mean, logvar = moments.chunk(2, dim=1)
    logvar = logvar.clamp(-30, 20)
    z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=generator)
    recon = vae.decode(z)
    err = recon - pixels
    rec = (weights * (err.abs() + err.square())).mean()
    kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3)).mean()
    return rec + KL_WEIGHT * kl, mean


def train_vae(cfg: VAEConfig, identity_seeds: list[int], work: Path, steps: int, size: int, batch: int = 16,
              patch: int = 64, lr: float = 2e-4, seed: int = 1, progress=None) -> VAE:
    torch.manual_seed(seed)
    vae = VAE(cfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    state = TrainState(work / "vae.state.pt", {"vae": vae}, {"opt": opt}, {"gen": gen})
    resumed = state.load()
    log = LossLog(work / "vae.loss.jsonl", offset=state.elapsed)
    if not resumed and log.path.exists():
        log.path.unlink()
    vae.train()
    while state.step < steps:
        step = state.step
        rng = np.random.default_rng([seed, step])
        whole = step % 4 == 3
        pixels, weights = frame_batch(identity_seeds, rng, batch // 2 if whole else batch, size,
                                      size if whole else patch)
        for g in opt.param_groups:  # cosine decay to a tenth, after a short warm-up
            g["lr"] = lr * min(1.0, (step + 1) / 100) * (0.55 + 0.45 * math.cos(math.pi * step / steps))
        loss, _ = vae_loss(vae, pixels, weights, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        state.step += 1
        if state.step % 10 == 0:
            log.write(state.step, loss=loss.item(), lr=opt.param_groups[0]["lr"])
        if progress is not None:
            progress(state.step, steps, loss.item())
        if state.step % 200 == 0 or state.step == steps:
            state.save(log.elapsed())
    return vae.eval()


@torch.no_grad()
def latent_scale(vae: VAE, identity_seeds: list[int], size: int, frames: int = 64, seed: int = 7) -> float:
    """1 / std of the latent means over random whole frames: the scaling factor that gives unit-variance latents."""
    rng = np.random.default_rng(seed)
    pixels, _ = frame_batch(identity_seeds, rng, frames, size, size)
    return float(1.0 / vae.encode_mean(pixels).std())


def ssim_loss(a: torch.Tensor, b: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """1 - mean SSIM of images (B, 3, H, W) in [-1, 1], on their luma, with a Gaussian window (the quality
    measurement's SSIM, differentiable)."""
    import torch.nn.functional as F

    weights = torch.tensor([0.299, 0.587, 0.114], dtype=a.dtype).view(1, 3, 1, 1)
    a, b = ((a + 1) / 2 * weights).sum(1, keepdim=True), ((b + 1) / 2 * weights).sum(1, keepdim=True)
    radius = int(3 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=a.dtype)
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(F.pad(t, (radius,) * 4, mode="reflect"), g.view(1, 1, 1, -1))
        return F.conv2d(t, g.view(1, 1, -1, 1))

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma * ma, blur(b * b) - mb * mb, blur(a * b) - ma * mb
    ssim = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return 1 - ssim.mean()


def finetune_decoder(vae: VAE, identity_seeds: list[int], work: Path, steps: int, size: int, batch: int = 8,
                     lr: float = 1e-4, seed: int = 6, progress=None) -> VAE:
    """Stage 1b: the decoder (and post_quant_conv) alone, on whole frames, with an SSIM term beside L1 + L2.

    The encoder stays frozen, so the latents the denoiser was trained on keep their meaning: this stage can run
    after the denoiser and only sharpens what the latents decode to."""
    params = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in vae.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    state = TrainState(work / "decoder.state.pt", {"vae": vae}, {"opt": opt}, {"gen": gen})
    resumed = state.load()
    log = LossLog(work / "decoder.loss.jsonl", offset=state.elapsed)
    if not resumed and log.path.exists():
        log.path.unlink()
    vae.decoder.train()
    while state.step < steps:
        step = state.step
        pixels, weights = frame_batch(identity_seeds, np.random.default_rng([seed, step]), batch, size, size)
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 50) * (0.55 + 0.45 * math.cos(math.pi * step / steps))
        with torch.no_grad():
            mean = vae.encode_mean(pixels)
        recon = vae.decode(mean)
        err = recon - pixels
        loss = (weights * (err.abs() + err.square())).mean() + ssim_loss(recon, pixels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        state.step += 1
        if state.step % 10 == 0:
            log.write(state.step, loss=loss.item(), lr=opt.param_groups[0]["lr"])
        if progress is not None:
            progress(state.step, steps, loss.item())
        if state.step % 100 == 0 or state.step == steps:
            state.save(log.elapsed())
    for p in vae.parameters():
        p.requires_grad_(True)
    return vae.eval()
