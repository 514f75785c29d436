"""Sizes of one square frame through the model: pixels -> VAE latents -> every UNet resolution level.

The VAE divides the side by `vae.downscale`; each UNet level below the first halves it again. Every place that
needs a latent side, a level's side or token count, or the unit frame sides must be a multiple of asks here.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import ModelConfig, UNetConfig


def size_unit(cfg: ModelConfig) -> int:
    """Frame sides must be multiples of this: the latent side is then a whole number at the lowest UNet level."""
    return cfg.vae.downscale * 2 ** (len(cfg.unet.block_out_channels) - 1)


@dataclass(frozen=True)
class Geometry:
    latent: int  # latent side (the UNet's level 0)
    levels: int  # UNet resolution levels

    @classmethod
    def of(cls, cfg: ModelConfig, size: int) -> "Geometry":
        """The geometry of frames `size` pixels square; ValueError if the UNet cannot take that size."""
        unit = size_unit(cfg)
        if size <= 0 or size % unit:
            raise ValueError(f"size {size} must be a positive multiple of {unit}")
        return cls(size // cfg.vae.downscale, len(cfg.unet.block_out_channels))

    @classmethod
    def of_latent(cls, unet: UNetConfig, latent: int) -> "Geometry":
        return cls(latent, len(unet.block_out_channels))

    def side(self, level: int) -> int:
        """Side of the feature maps at UNet level `level` (0 = the latent side)."""
        return self.latent >> level

    def tokens(self, level: int) -> int:
        """Spatial tokens of one frame at UNet level `level`."""
        return self.side(level) ** 2

    @property
    def mid(self) -> int:
        """Side at the lowest level (the mid block and its motion-frame features)."""
        return self.side(self.levels - 1)
