"""The trained components of an EchoMimic model: ReferenceNet, denoiser (audio in its cross-attention) and the
face locator (a one-channel face mask -> a feature added after the denoiser's first convolution). The audio
encoder (whisper-tiny) and the VAE are loaded beside them, as for Hallo."""
from __future__ import annotations

from torch import nn

from ..config import ModelConfig
from .denoising_unet import DenoisingUNet
from .projections import FaceLocator
from .reference_unet import ReferenceUNet


class EchoMimicNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.audio_attention.placement != "cross_attention":
            raise ValueError(f"{cfg.name}: an EchoMimic model attends to audio in its cross-attention")
        self.cfg = cfg
        self.reference_unet = ReferenceUNet(cfg.unet, cross_attention=False)  # it has none, and runs without
        self.denoising_unet = DenoisingUNet(cfg)
        self.face_locator = FaceLocator(cfg.face_locator)
