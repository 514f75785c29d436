"""diffusers AutoencoderKL weights (a model dir or a weight file) -> our VAE."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import VAEConfig
from ..models.vae import VAE
from .state_dict import CheckpointError, load_into, read_weights
from .vae_keys import normalize_vae_state_dict

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def vae_config_from_diffusers(d: dict) -> VAEConfig:
    return VAEConfig(in_channels=d.get("in_channels", 3), out_channels=d.get("out_channels", 3),
                     block_out_channels=tuple(d["block_out_channels"]), layers_per_block=d["layers_per_block"],
                     latent_channels=d["latent_channels"], norm_num_groups=d.get("norm_num_groups", 32),
                     scaling_factor=d.get("scaling_factor", 0.18215))


def load_vae(source: str | Path, cfg: VAEConfig | None = None, dtype: torch.dtype | None = None) -> VAE:
    """A diffusers VAE dir (config.json + weights) or a bare weight file (then `cfg` gives the shape)."""
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"VAE not found: {path}")
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise CheckpointError(f"VAE dir {path} has no config.json")
        cfg = vae_config_from_diffusers(json.loads(cfg_file.read_text()))
        weights = next((path / n for n in WEIGHT_FILES if (path / n).is_file()), None)
        if weights is None:
            raise CheckpointError(f"VAE dir {path} has none of {', '.join(WEIGHT_FILES)}")
        path = weights
    if cfg is None:
        raise CheckpointError(f"VAE weight file {path} needs a config (pass a diffusers model dir instead)")
    with torch.device("meta"):
        vae = VAE(cfg)
    return load_into(vae, normalize_vae_state_dict(read_weights(path)), what=f"VAE weights {path}", dtype=dtype).eval()
