"""Golden cases: discovery, weights, and one run of our model on a case's inputs.

A case is a `<name>.json` + `<name>.safetensors` pair made by running the public Hallo code. Cases are read from
the repository's `tests/data/golden/` (always), `$EMO_GOLDEN_DIR` (when set) and `../shared/golden` beside the
checkout (when it exists). What a case is comes from its json, never from its file name:

- "model": one clip of the full model; the config comes from the case (`ModelConfig.from_hallo`);
- "real_size": the same for a case whose model is the `hallo-sd15` preset; it runs on that preset;
- "audio": wav2vec2 features.

A model case stores its weights (`net.*`, `vae.*`) or, when its json has a `weights` block, none: they are
rebuilt from names and shapes (`weight_recipe`) and checked against the fingerprints the json records.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from emo.checkpoints.hallo_net import load_hallo_net
from emo.checkpoints.names import emo_to_hallo
from emo.checkpoints.state_dict import load_into
from emo.config import ModelConfig, RunConfig, VAEConfig, preset
from emo.models.hallo import HalloNet
from emo.models.vae import VAE
from emo.sampling.eager_clip import denoise
from emo.sampling.latents import decode_frames
from emo.sampling.torch_model import both_halves, prepare_clip, prepare_video

from .weight_recipe import RECIPE, fingerprint, recipe_weights

REPO_GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "golden"
SHARED_GOLDEN_DIR = Path(__file__).resolve().parents[2] / "shared" / "golden"  # beside the checkout

# Max absolute errors allowed (float32, CPU), as the golden README gives them.
TOLERANCES = {"audio_tokens": 1e-5, "step0_model_output": 5e-5, "final_latents": 2e-4, "video": 2e-4}
REAL_SIZE_TOLERANCES = {**TOLERANCES, "audio_tokens": 5e-5}  # the reference's own rounding is ~1.1e-5 there


def golden_dirs() -> list[tuple[str, Path]]:
    """(label, directory) of every place cases are read from, each directory once."""
    found = [("repo", REPO_GOLDEN_DIR)]
    if os.environ.get("EMO_GOLDEN_DIR"):
        found.append(("env", Path(os.environ["EMO_GOLDEN_DIR"])))
    if SHARED_GOLDEN_DIR.is_dir():
        found.append(("shared", SHARED_GOLDEN_DIR))
    seen, out = set(), []
    for label, d in found:
        if d.is_dir() and d.resolve() not in seen:
            seen.add(d.resolve())
            out.append((label, d))
    return out


@dataclass(frozen=True)
class Case:
    path: Path  # the json
    label: str  # where it was found: repo / env / shared

    @property
    def id(self) -> str:
        return f"{self.label}:{self.path.stem}"


def _is_real_size(meta: dict) -> bool:
    sd15 = preset("hallo-sd15").model
    return dataclasses.replace(ModelConfig.from_hallo(meta), name=sd15.name) == sd15


def kind_of(meta: dict) -> str | None:
    if "wav2vec2_config" in meta:
        return "audio"
    if "unet2d" in meta:
        return "real_size" if _is_real_size(meta) else "model"
    return None


def cases(kind: str, labels: tuple[str, ...] = ("repo", "env", "shared")) -> list[Case]:
    """Cases of one kind ("model", "real_size", "audio") from the directories with these labels."""
    found = []
    for label, d in golden_dirs():
        if label not in labels:
            continue
        for p in sorted(d.glob("*.json")):
            if p.with_suffix(".safetensors").is_file() and kind_of(json.loads(p.read_text())) == kind:
                found.append(Case(p, label))
    return found


def golden_file(name: str) -> Path | None:
    """A non-case file of the golden data (e.g. the real net.pth's tensor list), wherever it is found first."""
    return next((d / name for _, d in golden_dirs() if (d / name).is_file()), None)


def load_case(case: Case | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    path = case.path if isinstance(case, Case) else case
    return json.loads(path.read_text()), load_file(str(path.with_suffix(".safetensors")))


def _weights(meta: dict, tensors: dict[str, torch.Tensor], prefix: str,
             shapes: list[tuple[str, tuple[int, ...]]]) -> dict[str, torch.Tensor]:
    """The `prefix` ("net." / "vae.") part of a case's weights: stored in it, or rebuilt from the recipe by name."""
    spec = meta.get("weights")
    if spec is None:
        return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
    assert spec["recipe"] == RECIPE, f"unknown weight recipe {spec['recipe']!r}"
    sd = recipe_weights(shapes, prefix)
    recorded = spec[f"{prefix[:-1]}_fingerprint"]
    assert fingerprint(sd) == recorded, f"the rebuilt {prefix[:-1]} weights differ from the case's ({recorded})"
    return sd


def golden_net(meta: dict, tensors: dict[str, torch.Tensor], cfg: ModelConfig) -> HalloNet:
    """The case's net, through the net.pth loader (built on the meta device, tensors assigned)."""
    with torch.device("meta"):
        shapes = [(emo_to_hallo(k), tuple(v.shape)) for k, v in HalloNet(cfg).state_dict().items()]
    return load_hallo_net(_weights(meta, tensors, "net.", shapes), cfg)


def golden_vae(meta: dict, tensors: dict[str, torch.Tensor], cfg: VAEConfig) -> VAE:
    """The case's VAE (diffusers AutoencoderKL names)."""
    with torch.device("meta"):
        vae = VAE(cfg)
    shapes = [(k, tuple(v.shape)) for k, v in vae.state_dict().items()]
    return load_into(vae, _weights(meta, tensors, "vae.", shapes), what="golden VAE").eval()


def run_case(net: HalloNet, vae: VAE, cfg: ModelConfig, run: RunConfig,
             t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our outputs for the case's inputs, named as the case's `out.*` tensors they are compared with."""
    masks = [torch.cat([t[f"in.{m}_mask.{i}"] for m in ("full", "face", "lip")]) for i in range(4)]
    ref_image = t["in.ref_image"][0]  # (1+n, 3, H, W): the reference image, then the motion frames
    with torch.no_grad():
        audio_tokens = net.audioproj(t["in.audio_feats"][None])
        video = prepare_video(net, vae, cfg, ref_image[0], t["in.face_emb"][0], t["in.face_region"][0], masks,
                              run.motion_frames)
        clip = prepare_clip(net, vae, cfg, video, ref_image[1:], audio_tokens[0])
        step0 = both_halves(net.denoising_unet, clip, t["out.step0_model_input"], t["out.step0_timestep"][0].long(),
                            torch.tensor(run.motion_scale, device=clip.audio_tokens.device,
                                         dtype=clip.audio_tokens.dtype))
        latents = denoise(net, cfg, run, clip, t["out.init_latents"])
        frames = decode_frames(vae, latents, cfg.vae.scaling_factor)
    return {"audio_tokens": audio_tokens, "step0_model_output": step0, "final_latents": latents,
            "video": frames.transpose(0, 1)[None]}  # f c h w -> 1 c f h w


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()
