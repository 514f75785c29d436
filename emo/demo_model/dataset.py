"""The denoiser's training data: talking clips as VAE latents and audio features, and each identity's reference
inputs, made once with the trained VAE and audio encoder.

Each identity keeps the renderer's reference inputs (`prepare_portrait` on the full image, with the face found
in the rest frame): masks, face-region image and, for a few reference images (at rest, with the portrait's own
mouth, and random frames, as Hallo takes any frame of the video as reference), their pixels, latent and face
embedding. Each clip keeps its frames' latents, its audio features and its truth.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..models.vae import VAE
from ..preprocess.audio_features import AudioEncoder, compute_audio_features
from ..preprocess.face import Face
from ..preprocess.portrait import prepare_portrait
from .clips import CROP_SCALE, TRAIN_VOICES, framed_identity, make_clip
from .faces import Pose

REFERENCE_KINDS = ("rest", "own-mouth", "frame", "frame")


class FoundFace:
    """A detector that returns a face found before (so that every reference image of an identity is cropped
    where the detector put that identity's rest frame)."""

    def __init__(self, face: Face):
        self.face = face

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return [self.face]


@dataclass
class IdentityData:
    masks: list[torch.Tensor]  # per level (3, r*r)
    face_region: torch.Tensor  # (3, S, S)
    ref_latents: torch.Tensor  # (R, 4, h, w) scaled, one per reference image
    ref_embeddings: torch.Tensor  # (R, 512)


@dataclass
class ClipData:
    identity: int  # index into the identities
    latents: torch.Tensor  # (T, 4, h, w) scaled latent means of every frame
    audio: torch.Tensor  # (T, layers, hidden) audio features
    openness: torch.Tensor  # (T,)


@torch.no_grad()
def encode_frames(vae: VAE, frames: np.ndarray, scaling: float, chunk: int = 32) -> torch.Tensor:
    """(T, S, S, 3) uint8 -> (T, 4, S/8, S/8) scaled latent means."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1  # t h w c -> t c h w
    return torch.cat([vae.encode_mean(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)]) * scaling


def identity_data(seed: int, vae: VAE, scaling: float, size: int, rng: np.random.Generator) -> IdentityData:
    framed = framed_identity(seed)
    if framed is None:
        raise ValueError(f"identity {seed} has no face the detector finds")
    identity, face, _ = framed
    detector = FoundFace(face)
    images = []
    for kind in REFERENCE_KINDS:
        if kind == "rest":
            images.append(identity.frame())
        elif kind == "own-mouth":
            images.append(identity.frame(own_mouth=True))
        else:
            pose = Pose(*(rng.uniform(-1, 1, 4) * np.array([4.0, 3.0, 3.0, 0.025]) + np.array([0, 0, 0, 1.0])))
            images.append(identity.frame(float(rng.uniform(0, 1)), 0.0, pose))
    portraits = [prepare_portrait(img, size, size // 8, detector, crop_scale=CROP_SCALE) for img in images]
    pixels = np.stack([((p.pixels.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
                       for p in portraits])
    return IdentityData(portraits[0].masks, portraits[0].face_region, encode_frames(vae, pixels, scaling),
                        torch.stack([p.face_emb for p in portraits]))


@torch.no_grad()
def clip_data(index: int, identity_index: int, identity_seed: int, vae: VAE, scaling: float,
              encoder: AudioEncoder, seconds: float, size: int, fps: int = 25) -> ClipData:
    clip = make_clip(identity_seed, TRAIN_VOICES.start + 1000 + index, seconds, size, fps)
    feats, frames = compute_audio_features(encoder, clip.audio, fps, 0)
    return ClipData(identity_index, encode_frames(vae, clip.frames, scaling), feats[:frames].float(),
                    torch.from_numpy(clip.openness).float())


@dataclass
class TrainingData:
    identities: list[IdentityData]
    clips: list[ClipData]

    def save(self, path: Path) -> None:
        blob = {"identities": [vars(i) for i in self.identities], "clips": [vars(c) for c in self.clips]}
        tmp = path.with_name(path.name + ".tmp")
        torch.save(blob, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "TrainingData":
        blob = torch.load(path, weights_only=True)
        return cls([IdentityData(**i) for i in blob["identities"]], [ClipData(**c) for c in blob["clips"]])


def build(identity_seeds: list[int], vae: VAE, scaling: float, encoder: AudioEncoder, clips: int, seconds: float,
          size: int, progress=None, seed: int = 3) -> TrainingData:
    """Clip k is identity k mod len(identity_seeds) speaking training voice k."""
    rng = np.random.default_rng(seed)
    ids = [identity_data(s, vae, scaling, size, rng) for s in identity_seeds]
    out = []
    for k in range(clips):
        out.append(clip_data(k, k % len(identity_seeds), identity_seeds[k % len(identity_seeds)], vae, scaling,
                             encoder, seconds, size))
        if progress is not None:
            progress(k + 1, clips, 0.0)
    return TrainingData(ids, out)
