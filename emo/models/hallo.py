"""The five trained components of an EMO/Hallo model, named as in Hallo's `net.pth`."""
from __future__ import annotations

from torch import nn

from ..config import ModelConfig
from .denoising_unet import DenoisingUNet
from .projections import AudioProj, FaceLocator, ImageProj
from .reference_unet import ReferenceUNet


class HalloNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.reference_unet = ReferenceUNet(cfg.unet)
        self.denoising_unet = DenoisingUNet(cfg)
        self.face_locator = FaceLocator(cfg.face_locator)
        self.imageproj = ImageProj(cfg.imageproj)
        self.audioproj = AudioProj(cfg.audioproj)
