"""Every component a render needs, loaded from Hallo's `pretrained_models` layout or made with seeded random weights."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import HALLO_SD15, TINY, ModelConfig
from ..errors import InputError
from ..models.hallo import HalloNet
from ..models.init import randomize_
from ..models.vae import VAE
from ..preprocess.audio_features import AudioEncoder
from .hallo_net import load_hallo_net
from .vae import load_vae

CONFIG_FILE = "emo_config.json"  # optional: a ModelConfig for non-default shapes; hallo-sd15 otherwise
NET_FILES = ("hallo/net.pth", "hallo/net.safetensors")
VAE_DIR = "sd-vae-ft-mse"
WAV2VEC_DIR = "wav2vec/wav2vec2-base-960h"


@dataclass
class Models:
    cfg: ModelConfig
    net: HalloNet
    vae: VAE
    audio_encoder: AudioEncoder

    def to(self, device: torch.device, dtype: torch.dtype) -> "Models":
        """Diffusion parts in `dtype`; the audio encoder stays float32 (its features feed a float32 projection)."""
        self.net.to(device, dtype)
        self.vae.to(device, dtype)
        self.audio_encoder.to(device)
        return self

    def check(self) -> None:
        a, w = self.cfg.audioproj, self.audio_encoder.cfg
        if (a.blocks, a.channels) != (w.num_hidden_layers, w.hidden_size):
            raise InputError(f"audio encoder gives {w.num_hidden_layers} layers x {w.hidden_size} features but the "
                             f"audio projection expects {a.blocks} x {a.channels}")


def load_model_dir(root: str | Path) -> Models:
    """`root/hallo/net.pth`, `root/sd-vae-ft-mse/`, `root/wav2vec/wav2vec2-base-960h/` (+ optional emo_config.json)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"model directory not found: {root}")
    cfg = HALLO_SD15
    if (root / CONFIG_FILE).is_file():
        try:
            cfg = ModelConfig.from_dict(json.loads((root / CONFIG_FILE).read_text()))
        except (ValueError, TypeError, KeyError) as e:
            raise InputError(f"{root / CONFIG_FILE} is not a valid model config: {e}") from None
    net_file = next((root / n for n in NET_FILES if (root / n).is_file()), None)
    if net_file is None:
        raise InputError(f"model directory {root} has no {' or '.join(NET_FILES)}")
    for sub in (VAE_DIR, WAV2VEC_DIR):
        if not (root / sub).is_dir():
            raise InputError(f"model directory {root} has no {sub}/")
    models = Models(cfg, load_hallo_net(net_file, cfg), load_vae(root / VAE_DIR),
                    AudioEncoder.from_pretrained_dir(root / WAV2VEC_DIR))
    if models.vae.cfg.latent_channels != cfg.unet.in_channels:
        raise InputError(f"VAE in {root / VAE_DIR} has {models.vae.cfg.latent_channels} latent channels, "
                         f"the denoiser expects {cfg.unet.in_channels}")
    models.check()
    return models


def random_models(seed: int = 0, cfg: ModelConfig = TINY) -> Models:
    """Seeded random weights of a preset (real architecture, no trained weights)."""
    torch.manual_seed(seed)
    net = randomize_(HalloNet(cfg), seed).eval()
    vae = randomize_(VAE(cfg.vae), seed + 1).eval()
    encoder = AudioEncoder(cfg.wav2vec)
    randomize_(encoder.model, seed + 2)
    models = Models(cfg, net, vae, encoder.eval())
    models.check()
    return models


def save_model_dir(models: Models, root: str | Path, net_file: str = NET_FILES[0]) -> Path:
    """Write models in the Hallo layout (the demo model, tests of the loader); net_file: one of NET_FILES."""
    from safetensors.torch import save_file

    from .names import emo_to_hallo

    if net_file not in NET_FILES:
        raise ValueError(f"net_file must be one of {', '.join(NET_FILES)}")
    root = Path(root)
    (root / "hallo").mkdir(parents=True, exist_ok=True)
    net = {emo_to_hallo(k): v.contiguous() for k, v in models.net.state_dict().items()}
    if net_file.endswith(".safetensors"):
        save_file(net, str(root / net_file))
    else:
        torch.save(net, root / net_file)
    (root / CONFIG_FILE).write_text(json.dumps(models.cfg.to_dict()))
    vae_dir = root / VAE_DIR
    vae_dir.mkdir(exist_ok=True)
    c = models.vae.cfg
    (vae_dir / "config.json").write_text(json.dumps(dict(
        _class_name="AutoencoderKL", in_channels=c.in_channels, out_channels=c.out_channels,
        block_out_channels=list(c.block_out_channels), layers_per_block=c.layers_per_block,
        latent_channels=c.latent_channels, norm_num_groups=c.norm_num_groups, scaling_factor=c.scaling_factor)))
    save_file({k: v.contiguous() for k, v in models.vae.state_dict().items()},
              str(vae_dir / "diffusion_pytorch_model.safetensors"))
    w2v = root / WAV2VEC_DIR
    w2v.mkdir(parents=True, exist_ok=True)
    models.audio_encoder.model.config.save_pretrained(w2v)
    save_file({k: v.contiguous() for k, v in models.audio_encoder.model.state_dict().items()},
              str(w2v / "model.safetensors"))
    return root
