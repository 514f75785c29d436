"""VAE: decoding matches the goldens' diffusers AutoencoderKL; diffusers dirs and legacy names load."""
from __future__ import annotations

import json

import pytest
import torch

from emo.checkpoints.state_dict import CheckpointError
from emo.checkpoints.vae import load_vae, normalize_vae_state_dict
from emo.config import TINY
from emo.models.init import randomize_
from emo.models.vae import VAE

from .golden import cases, load_case

CASES = cases("hallo_tiny")


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_decode_matches_golden(path):
    from emo.config import ModelConfig

    meta, t = load_case(path)
    cfg = ModelConfig.from_hallo(meta).vae
    vae = VAE(cfg).eval()
    vae.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("vae.")})
    lat = t["out.final_latents"][0].transpose(0, 1) / cfg.scaling_factor  # c f h w -> f c h w
    with torch.no_grad():
        frames = (vae.decode(lat) / 2 + 0.5).clamp(0, 1)
    assert (frames.transpose(0, 1)[None] - t["out.video"]).abs().max().item() <= 2e-4


@pytest.fixture(scope="module")
def tiny_vae():
    return randomize_(VAE(TINY.vae), seed=1).eval()


def _diffusers_dir(tmp_path, sd):
    from safetensors.torch import save_file

    c = TINY.vae
    (tmp_path / "config.json").write_text(json.dumps(dict(
        _class_name="AutoencoderKL", block_out_channels=list(c.block_out_channels), layers_per_block=c.layers_per_block,
        latent_channels=c.latent_channels, norm_num_groups=c.norm_num_groups, scaling_factor=c.scaling_factor)))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    return tmp_path


def test_legacy_attention_names_load(tmp_path, tiny_vae):
    legacy = {}
    for k, v in tiny_vae.state_dict().items():
        for new, old in ((".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."), (".to_out.0.", ".proj_attn.")):
            if new in k:
                k = k.replace(new, old)
                v = v[:, :, None, None] if v.dim() == 2 else v
        legacy[k] = v
    assert any(".proj_attn." in k for k in legacy)
    vae = load_vae(_diffusers_dir(tmp_path, legacy))
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(vae.encode_mean(x), tiny_vae.encode_mean(x))
    assert normalize_vae_state_dict(tiny_vae.state_dict()).keys() == tiny_vae.state_dict().keys()


def test_odd_sizes_round_trip_shapes(tiny_vae):
    x = torch.rand(2, 3, 64, 96) * 2 - 1
    with torch.no_grad():
        z = tiny_vae.encode_mean(x)
        assert z.shape == (2, 4, 8, 12)
        assert tiny_vae.decode(z).shape == x.shape


def test_wrong_vae_is_refused(tmp_path, tiny_vae):
    sd = tiny_vae.state_dict()
    sd.pop("decoder.conv_out.bias")
    with pytest.raises(CheckpointError, match="decoder.conv_out.bias"):
        load_vae(_diffusers_dir(tmp_path, sd))
    with pytest.raises(CheckpointError, match="not found"):
        load_vae(tmp_path / "nowhere")
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_vae(tmp_path)
