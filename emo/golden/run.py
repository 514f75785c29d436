"""A golden case's model, and one run of ours on its inputs, named as the outputs it is compared with.

A model case stores its weights (`net.*`, `vae.*`) or, when its json has a `weights` block, none: they are
rebuilt from names and shapes (`recipe`) and checked against the fingerprints the json records.
"""
from __future__ import annotations

import torch

from ..checkpoints.hallo_net import load_hallo_net
from ..checkpoints.names import emo_to_hallo
from ..checkpoints.state_dict import load_into
from ..config import ModelConfig, RunConfig, VAEConfig
from ..models.hallo import HalloNet
from ..models.vae import VAE
from ..sampling.eager_clip import denoise
from ..sampling.latents import decode_frames
from ..sampling.torch_model import denoise_halves, prepare_clip, prepare_video
from .recipe import RECIPE, fingerprint, recipe_weights


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
        step0 = denoise_halves(net.denoising_unet, clip, t["out.step0_model_input"],
                               t["out.step0_timestep"][0].long(),
                               torch.tensor(run.motion_scale, device=clip.audio_tokens.device,
                                            dtype=clip.audio_tokens.dtype))[0]
        latents = denoise(net, cfg, run, clip, t["out.init_latents"])
        frames = decode_frames(vae, latents, cfg.vae.scaling_factor)
    return {"audio_tokens": audio_tokens, "step0_model_output": step0, "final_latents": latents,
            "video": frames.transpose(0, 1)[None]}  # f c h w -> 1 c f h w


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()
