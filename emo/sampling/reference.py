"""Reference-image and motion-frame features, with the reference code's exact context pairing.

Hallo runs the ReferenceNet once per clip on the batch [ref, m1..mn, ref, m1..mn] with the cross-attention context
[uncond, cond] repeated to the batch size, so image i is paired with context i mod 2. The denoiser's cond half
then reads, for frame j of the clip, the reference record of image ((f + j) mod 2)·(1 + n) (the bank is tiled, not
interleaved), and each half b reads the records of its own motion frames.

The ReferenceNet is 2D, so every image in that batch is independent: here the two reference records are computed
once per video and only the n motion frames (down and mid blocks) once per clip. The numbers are the same. The two
records' keys/values are kept once (the "entries"); each cond frame names the entry it reads (`reference_index`).

Hallo hands the ReferenceNet's records to the denoiser in float16, in float32 runs too, and the denoiser promotes
them back where it concatenates them: `as_recorded` reproduces that rounding.
"""
from __future__ import annotations

import torch

from ..config import UNetConfig
from ..geometry import Geometry
from ..models.denoising_unet import DenoisingUNet
from ..models.reference_unet import ReferenceUNet
from ..models.transformer import RefKV
from ..models.unet_layout import mid_record_index


def as_recorded(record: torch.Tensor) -> torch.Tensor:
    """A ReferenceNet record as the reference's denoiser reads it: rounded to float16, back in the compute dtype.

    Hallo stores its recorded features in float16 whatever the run's dtype; at SD1.5 size skipping the rounding
    moves the first step by ~6e-5. float16 runs are unchanged; bfloat16 ones are left alone (not every bfloat16
    value fits float16's range, and the reference never runs in bfloat16).
    """
    if record.dtype in (torch.float32, torch.float64):
        return record.to(torch.float16).to(record.dtype)
    return record


def reference_context(tokens: torch.Tensor, motion_frames: int) -> torch.Tensor:
    """The contexts Hallo pairs with its two reference images (0 and 1 + n): (2, t, c) from tokens [uncond, cond]."""
    return tokens[[0, (1 + motion_frames) % 2]]


def reference_kv(refnet: ReferenceUNet, denoiser: DenoisingUNet, ref_latent: torch.Tensor,
                 context: torch.Tensor) -> list[RefKV]:
    """Reference-image keys/values per spatial transformer: (2, heads, l, d) each.

    ref_latent (1, 4, h, w); context (2, t, c) from `reference_context`. Entry 0 is the reference paired with
    context 0 (image 0 of Hallo's batch), entry 1 paired with context (1 + n) mod 2 (image 1 + n).
    """
    records = refnet(ref_latent.expand(2, -1, -1, -1), context)
    return denoiser.reference_kv([as_recorded(r) for r in records])


def reference_index(frames: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The reference entry each cond frame of a clip reads: frame j reads entry (f + j) mod 2 -> (f,) int64."""
    return (frames + torch.arange(frames, device=device)) % 2


def motion_context(tokens: torch.Tensor, motion_frames: int) -> torch.Tensor:
    """Contexts of the motion frames, half b's frame s being Hallo's image b·(1+n) + s: (2n, t, c)."""
    index = torch.arange(1, motion_frames + 1, device=tokens.device)
    return tokens[torch.cat([index % 2, (index + 1 + motion_frames) % 2])]


def no_motion_features(cfg: UNetConfig, latent: int, like: torch.Tensor) -> torch.Tensor:
    """The motion features of a clip without motion frames, in `like`'s dtype and device: (2, 0, c, h_mid, w_mid).
    Empty, not absent, so that the denoiser's inputs keep one layout (the exported motion graph needs n >= 1)."""
    hm = Geometry.of_latent(cfg, latent).mid
    return like.new_zeros(2, 0, cfg.block_out_channels[-1], hm, hm)


def motion_features(refnet: ReferenceUNet, motion_latents: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Mid-block features of the motion frames per CFG half: (2, n, c, h_mid, w_mid).

    motion_latents (n, 4, h, w); context (2n, t, c) from `motion_context`.
    """
    n, cfg = motion_latents.shape[0], refnet.cfg
    if n == 0:
        return no_motion_features(cfg, motion_latents.shape[-1], motion_latents)
    hm = Geometry.of_latent(cfg, motion_latents.shape[-1]).mid
    rec = as_recorded(refnet(motion_latents.repeat(2, 1, 1, 1), context, up_to_mid=True)[mid_record_index(cfg)])
    return rec.view(2, n, hm, hm, cfg.block_out_channels[-1]).permute(0, 1, 4, 2, 3)  # (b s) (h w) c -> b s c h w
