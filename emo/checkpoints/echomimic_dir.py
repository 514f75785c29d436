"""EchoMimic's `pretrained_weights` layout -> our modules, merged in the reference's order.

    pretrained_weights/
      sd-image-variations-diffusers/unet/   config.json + diffusion_pytorch_model.{safetensors,bin}: the base UNet
      sd-vae-ft-mse/                        the VAE (diffusers)
      audio_processor/whisper_tiny.pt       the audio encoder (openai-whisper format)
      reference_unet.pth                    the ReferenceNet (all of it)
      denoising_unet[_acc].pth              the denoiser (strict=False over the merge below)
      motion_module[_acc].pth               its temporal modules
      face_locator.pth

The denoiser is built as the reference builds it: the base UNet's tensors where their shapes fit, the motion
module file over them, then the denoiser file over that. A tensor none of them holds is refused (the reference
would keep its random initialisation there; the positional tables of the motion modules, which are fixed
functions, are the exception). Tensors of a file the runtime does not use are reported, not hidden.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import ECHOMIMIC_SD15, ModelConfig, UNetConfig
from ..errors import InputError
from ..models.echomimic import EchoMimicNet
from ..models.motion_module import sinusoidal_positions
from ..models.vae import VAE
from .names import emo_to_hallo, hallo_to_emo
from .state_dict import CheckpointError, load_into, read_weights
from .vae import load_vae

BASE_UNET = "sd-image-variations-diffusers/unet"
VAE_DIR = "sd-vae-ft-mse"
WHISPER_FILE = "audio_processor/whisper_tiny.pt"
BASE_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
FAMILY_FILES = {
    "echomimic": ("denoising_unet.pth", "motion_module.pth"),
    "echomimic-acc": ("denoising_unet_acc.pth", "motion_module_acc.pth"),
}
COMMON_FILES = ("reference_unet.pth", "face_locator.pth")


@dataclass
class MergeReport:
    """What each file gave the model: tensors taken, and those it holds that the model has no place for."""

    taken: dict[str, int] = field(default_factory=dict)  # file -> tensors used
    unused: dict[str, list[str]] = field(default_factory=dict)  # file -> names the runtime does not use
    computed: list[str] = field(default_factory=list)  # fixed tables no file held (positional encodings)

    def lines(self) -> list[str]:
        out = [f"{name}: {n} tensors" for name, n in self.taken.items()]
        out += [f"{name}: {len(names)} tensors not used ({', '.join(names[:3])}{', …' if len(names) > 3 else ''})"
                for name, names in self.unused.items() if names]
        if self.computed:
            out.append(f"{len(self.computed)} positional tables computed (no file holds them)")
        return out


def is_echomimic_dir(root: Path) -> bool:
    return any((root / f).is_file() for files in FAMILY_FILES.values() for f in files) or (
        (root / "reference_unet.pth").is_file())


def detect_family(root: Path, family: str | None = None) -> str:
    """echomimic or echomimic-acc, from which denoiser file is present (or `family` when both are)."""
    present = [name for name, files in FAMILY_FILES.items() if (root / files[0]).is_file()]
    if family is not None:
        if family not in FAMILY_FILES:
            raise InputError(f"unknown EchoMimic family {family!r} (choose {', '.join(FAMILY_FILES)})")
        if family not in present:
            raise InputError(f"{root} has no {FAMILY_FILES[family][0]} for --family {family}")
        return family
    if not present:
        raise InputError(f"{root} has no {' or '.join(files[0] for files in FAMILY_FILES.values())}")
    if len(present) > 1:
        raise InputError(f"{root} holds both the normal and the accelerated EchoMimic denoiser: "
                         "choose one with --family echomimic or --family echomimic-acc")
    return present[0]


def missing_files(root: Path, family: str) -> list[str]:
    wanted = [*COMMON_FILES, *FAMILY_FILES[family], f"{BASE_UNET}/config.json", f"{VAE_DIR}/config.json",
              WHISPER_FILE]
    missing = [f for f in wanted if not (root / f).is_file()]
    if not any((root / BASE_UNET / w).is_file() for w in BASE_WEIGHTS):
        missing.append(f"{BASE_UNET}/{BASE_WEIGHTS[0]}")
    return missing


def echomimic_config(base_unet: dict, audio_dim: int, name: str = "echomimic") -> ModelConfig:
    """The model config of an EchoMimic checkpoint: the base UNet's shape, audio tokens of `audio_dim` in the
    denoiser's cross-attention (scaled by 3), the rest as the published model."""
    import dataclasses

    unet = UNetConfig.from_diffusers(base_unet)
    audio = dataclasses.replace(ECHOMIMIC_SD15.audio_attention, dim=audio_dim)
    face = dataclasses.replace(ECHOMIMIC_SD15.face_locator, embedding_channels=unet.block_out_channels[0])
    return dataclasses.replace(ECHOMIMIC_SD15, name=name, unet=unet, audio_attention=audio, face_locator=face)


def merge_denoiser(net: EchoMimicNet, base: dict[str, torch.Tensor], motion: dict[str, torch.Tensor],
                   denoiser: dict[str, torch.Tensor], names: tuple[str, str, str], report: MergeReport
                   ) -> dict[str, torch.Tensor]:
    """The reference's merge for the denoiser -> a complete state dict in our names."""
    expected = net.denoising_unet.state_dict()
    ref_names = {emo_to_hallo(k): k for k in expected}  # the reference's names -> ours
    merged: dict[str, torch.Tensor] = {}
    for k, v in base.items():  # the base 2D UNet where the shape fits (not the audio cross-attention's K/V)
        ours = ref_names.get(k)
        if ours is not None and tuple(v.shape) == tuple(expected[ours].shape):
            merged[ours] = v
    for source, sd in ((names[1], motion), (names[2], denoiser)):
        unused = []
        for k, v in sd.items():
            ours = ref_names.get(k)
            if ours is None:
                unused.append(k)
                continue
            if tuple(v.shape) != tuple(expected[ours].shape):
                raise CheckpointError(f"{source}: {k} has shape {tuple(v.shape)}, the model expects "
                                      f"{tuple(expected[ours].shape)}")
            merged[ours] = v
        report.taken[source] = len(sd) - len(unused)
        report.unused[source] = unused
    report.taken[names[0]] = sum(1 for k in base if ref_names.get(k) in merged)
    for k, v in expected.items():
        if k not in merged and k.endswith(".pe"):  # (1, max_len, dim): a fixed table, as the module makes it
            merged[k] = sinusoidal_positions(v.shape[1], v.shape[2])
            report.computed.append(k)
    missing = [emo_to_hallo(k) for k in expected if k not in merged]
    if missing:
        raise CheckpointError(f"the EchoMimic denoiser has no weights for {len(missing)} tensors in the base UNet, "
                              f"{names[1]} or {names[2]} ({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''})")
    return merged


def load_part(module: torch.nn.Module, sd: dict[str, torch.Tensor], source: str, report: MergeReport,
              dtype: torch.dtype | None) -> None:
    """Load the tensors `module` has from `sd` (reference names); the rest of `sd` is reported unused."""
    expected = module.state_dict()
    ours = {hallo_to_emo(k): v for k, v in sd.items()}
    report.unused[source] = [k for k in sd if hallo_to_emo(k) not in expected]
    report.taken[source] = len(sd) - len(report.unused[source])
    load_into(module, {k: v for k, v in ours.items() if k in expected}, what=source, dtype=dtype)


@dataclass
class EchoMimicModels:
    cfg: ModelConfig
    family: str  # echomimic | echomimic-acc
    net: EchoMimicNet
    vae: VAE
    audio_encoder: torch.nn.Module  # whisper encoder
    report: MergeReport

    def to(self, device: torch.device, dtype: torch.dtype) -> "EchoMimicModels":
        self.net.to(device, dtype)
        self.vae.to(device, dtype)
        self.audio_encoder.to(device)
        return self


def load_echomimic_dir(root: str | Path, family: str | None = None) -> EchoMimicModels:
    """Every component of an EchoMimic `pretrained_weights` directory, merged as the reference merges them."""
    from .whisper import load_whisper_encoder

    root = Path(root)
    family = detect_family(root, family)
    missing = missing_files(root, family)
    if missing:
        raise InputError(f"EchoMimic directory {root} lacks {', '.join(missing)}")
    base_cfg = json.loads((root / BASE_UNET / "config.json").read_text())
    encoder, ignored = load_whisper_encoder(root / WHISPER_FILE)
    cfg = echomimic_config(base_cfg, encoder.cfg.n_state, name=family)
    vae = load_vae(root / VAE_DIR)
    cfg = _with_vae(cfg, vae)
    base_file = next(root / BASE_UNET / w for w in BASE_WEIGHTS if (root / BASE_UNET / w).is_file())
    den_file, mm_file = FAMILY_FILES[family]
    report = MergeReport()
    with torch.device("meta"):
        net = EchoMimicNet(cfg)
    base = read_weights(base_file)
    merged = merge_denoiser(net, base, read_weights(root / mm_file), read_weights(root / den_file),
                            (str(base_file.relative_to(root)), mm_file, den_file), report)
    load_into(net.denoising_unet, merged, what=den_file)
    load_part(net.reference_unet, read_weights(root / "reference_unet.pth"), "reference_unet.pth", report, None)
    load_part(net.face_locator, read_weights(root / "face_locator.pth"), "face_locator.pth", report, None)
    report.unused[WHISPER_FILE] = ignored
    return EchoMimicModels(cfg, family, net.eval(), vae, encoder, report)


def random_echomimic_models(seed: int = 0, cfg: ModelConfig | None = None, family: str = "echomimic-acc"
                            ) -> EchoMimicModels:
    """Seeded random weights of an EchoMimic preset (the real architecture, no trained weights: noise video)."""
    from ..config import ECHOMIMIC_TINY
    from ..models.init import randomize_
    from ..models.whisper_encoder import WhisperConfig, WhisperEncoder

    cfg = cfg or ECHOMIMIC_TINY
    if family not in FAMILY_FILES:
        raise InputError(f"unknown EchoMimic family {family!r} (choose {', '.join(FAMILY_FILES)})")
    torch.manual_seed(seed)
    net = randomize_(EchoMimicNet(cfg), seed).eval()
    vae = randomize_(VAE(cfg.vae), seed + 1).eval()
    encoder = randomize_(WhisperEncoder(WhisperConfig(n_state=cfg.audio_attention.dim)), seed + 2).eval()
    return EchoMimicModels(cfg, family, net, vae, encoder, MergeReport())


def _with_vae(cfg: ModelConfig, vae: VAE) -> ModelConfig:
    import dataclasses

    if vae.cfg.latent_channels != cfg.unet.in_channels:
        raise InputError(f"the VAE has {vae.cfg.latent_channels} latent channels, the denoiser expects "
                         f"{cfg.unet.in_channels}")
    return dataclasses.replace(cfg, vae=vae.cfg)
