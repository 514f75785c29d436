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
