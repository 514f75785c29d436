"""Stage 4: ReferenceNet + denoiser + face locator + image and audio projections, from scratch, with Hallo's
objective (`objective.py`) on one clip of f frames a step, chained by n motion frames as inference chains clips.

Every conditioning tensor is made by the functions inference uses (`sampling/reference.py`: the reference K/V
entries with Hallo's context pairing, the motion-frame features; the renderer's masks and face-region image), so
the trained denoiser sees at training what it sees when rendering. Condition dropout, per step:
  image 5 %  no reference attention (Hallo's uncond_img_ratio)
  audio 5 %  zero audio tokens (Hallo's uncond_audio_ratio)
  all  10 %  everything the renderer's unconditional half lacks (reference, audio, face embedding, face
             locator), so that classifier-free guidance extrapolates from a trained unconditional prediction
  start 10 % motion frames = the reference repeated, as the first clip of a render has them
The loss is weighted ×5 over the lip region (the renderer's own lip mask), where the voice shows.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from ..models.hallo import HalloNet
from ..preprocess.audio_features import FrameWindows
from ..sampling.reference import motion_context, motion_features, reference_context, reference_index, reference_kv
from .dataset import TrainingData
from .objective import Objective
from .state import EMA, LossLog, TrainState

LIP_WEIGHT = 4.0


@dataclass(frozen=True)
class Dropout:
    image: float = 0.05
    audio: float = 0.05
    all: float = 0.10
    start: float = 0.10


@dataclass(frozen=True)
class Sample:
    clip: int
    start: int  # first frame of the clip's window (>= n unless `first`)
    reference: int  # which of the identity's reference images
    t: int
    no_image: bool
    no_audio: bool
    unconditional: bool
    first: bool  # motion frames are the reference repeated


def fresh_net(cfg: ModelConfig, seed: int) -> HalloNet:
    """Default initialisation, with the residual outputs that join a trained path zeroed (motion modules, audio
    modules, face locator), as Hallo and AnimateDiff start them."""
    torch.manual_seed(seed)
    net = HalloNet(cfg)
    with torch.no_grad():
        for name, module in net.named_modules():
            if re.search(r"(motion_modules|audio_modules)\.\d+\.proj_out$|^face_locator\.conv_out$", name):
                for p in module.parameters():
                    p.zero_()
    return net


class DenoiserTrainer:
    def __init__(self, net: HalloNet, data: TrainingData, frames: int = 16, motion_frames: int = 2,
                 dropout: Dropout = Dropout(), lr: float = 2e-4, seed: int = 4):
        self.net, self.data, self.f, self.n, self.dropout, self.lr, self.seed = (
            net, data, frames, motion_frames, dropout, lr, seed)
        self.objective = Objective(net.cfg.scheduler)
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=0.01)
        self.gen = torch.Generator().manual_seed(seed)

    def draw(self, rng: np.random.Generator) -> Sample:
        clip = int(rng.integers(len(self.data.clips)))
        length = self.data.clips[clip].latents.shape[0]
        first = bool(rng.random() < self.dropout.start)
        lo = 0 if first else self.n
        start = int(rng.integers(lo, length - self.f + 1))
        refs = self.data.identities[self.data.clips[clip].identity].ref_latents.shape[0]
        u = rng.random()
        return Sample(clip, start, int(rng.integers(refs)), int(rng.integers(self.objective.steps)),
                      no_image=bool(rng.random() < self.dropout.image),
                      no_audio=bool(rng.random() < self.dropout.audio),
                      unconditional=bool(u < self.dropout.all), first=first)

    def predict(self, s: Sample, noisy: torch.Tensor) -> torch.Tensor:
        """The denoiser's prediction for noisy latents (1, 4, f, h, w) under sample s's conditioning."""
        net, f, n = self.net, self.f, self.n
        clip = self.data.clips[s.clip]
        ident = self.data.identities[clip.identity]
        emb = ident.ref_embeddings[s.reference][None]
        tokens = net.imageproj(torch.cat([torch.zeros_like(emb), emb]))  # (2, t, c): [uncond, cond]
        ref = ident.ref_latents[s.reference][None]
        motion_latents = ref.expand(n, -1, -1, -1) if s.first else clip.latents[s.start - n:s.start]
        kv = reference_kv(net.reference_unet, net.denoising_unet, ref, reference_context(tokens, n))
        half = 0 if s.unconditional else 1
        motion = motion_features(net.reference_unet, motion_latents, motion_context(tokens, n))[half:half + 1]
        audio = net.audioproj(FrameWindows(clip.audio)[s.start:s.start + f][None])  # (1, f, t, c)
        face = net.face_locator(ident.face_region[None])
        if s.unconditional or s.no_audio:
            audio = torch.zeros_like(audio)
        if s.unconditional:
            face = torch.zeros_like(face)
        index = (torch.zeros(0, dtype=torch.long) if s.unconditional or s.no_image else reference_index(f))
        t = torch.tensor([float(s.t)])
        return net.denoising_unet(noisy, t, tokens[half:half + 1], audio, face, ident.masks, kv, index, motion,
                                  torch.ones(3))

    def loss(self, s: Sample) -> torch.Tensor:
        clip = self.data.clips[s.clip]
        x0 = clip.latents[s.start:s.start + self.f].transpose(0, 1)[None]  # f c h w -> 1 c f h w
        t = torch.tensor([s.t])
        noise = self.objective.noise_like(x0, self.gen)
        target = self.objective.velocity(x0, noise, t)
        pred = self.predict(s, self.objective.add_noise(x0, noise, t))
        lip = self.data.identities[clip.identity].masks[0][2].view(1, 1, 1, *x0.shape[-2:])  # (r r) -> 1 1 1 r r
        weight = 1 + LIP_WEIGHT * lip
        return self.objective.weights(t)[0] * (weight * (pred - target).square()).mean() / weight.mean()

    def step(self, step: int, total: int) -> float:
        rng = np.random.default_rng([self.seed, step])
        s = self.draw(rng)
        for g in self.opt.param_groups:  # warm-up, then cosine decay to a tenth
            g["lr"] = self.lr * min(1.0, (step + 1) / 200) * (0.55 + 0.45 * math.cos(math.pi * step / total))
        self.net.train()
        loss = self.loss(s)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        return loss.item()

    @torch.no_grad()
    def validation_loss(self, count: int = 8) -> float:
        """The loss of fixed draws (seeded apart from the training draws), conditional only, at spread timesteps."""
        self.net.eval()
        state = self.gen.get_state()
        self.gen.manual_seed(12345)
        rng = np.random.default_rng([self.seed, 10 ** 9])
        losses = []
        for i in range(count):
            s = self.draw(rng)
            s = Sample(s.clip, max(s.start, self.n), s.reference, int((i + 0.5) / count * self.objective.steps),
                       False, False, False, False)
            losses.append(self.loss(s).item())
        self.gen.set_state(state)
        return float(np.mean(losses))


def train_denoiser(net: HalloNet, data: TrainingData, work: Path, steps: int, ema_decay: float = 0.999,
                   progress=None, **kw) -> tuple[HalloNet, nn.Module]:
    """-> (net, its EMA) after `steps` steps, resuming from work/denoiser.state.pt."""
    trainer = DenoiserTrainer(net, data, **kw)
    ema = EMA(net, ema_decay)
    state = TrainState(work / "denoiser.state.pt", {"net": net, "ema": ema}, {"opt": trainer.opt},
                       {"gen": trainer.gen})
    resumed = state.load()
    log = LossLog(work / "denoiser.loss.jsonl", offset=state.elapsed)
    if not resumed and log.path.exists():
        log.path.unlink()
    while state.step < steps:
        loss = trainer.step(state.step, steps)
        ema.update(net, state.step)
        state.step += 1
        if state.step % 10 == 0:
            log.write(state.step, loss=loss, lr=trainer.opt.param_groups[0]["lr"])
        if state.step % 500 == 0 or state.step == steps:
            log.write(state.step, validation=trainer.validation_loss())
        if progress is not None:
            progress(state.step, steps, loss)
        if state.step % 250 == 0 or state.step == steps:
            state.save(log.elapsed())
    return net.eval(), ema
