"""VAE: decoding matches the goldens' diffusers AutoencoderKL; legacy names and diffusers dirs load."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from emo.checkpoints.state_dict import CheckpointError
from emo.checkpoints.vae import load_vae
from emo.checkpoints.vae_keys import LEGACY_ATTENTION_NAMES, normalize_vae_state_dict
from emo.config import TINY, ModelConfig
from emo.golden.cases import cases, load_case
from emo.golden.run import golden_vae
from emo.models.init import randomize_
from emo.models.vae import VAE

CASES = cases("model")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decode_matches_golden(case):
    meta, t = load_case(case)
    cfg = ModelConfig.from_hallo(meta).vae
    vae = golden_vae(meta, t, cfg)
    lat = t["out.final_latents"]
    b, c, f, h, w = lat.shape
    z = lat.transpose(1, 2).reshape(b * f, c, h, w) / cfg.scaling_factor  # b c f h w -> (b f) c h w
    with torch.no_grad():
        frames = (vae.decode(z) / 2 + 0.5).clamp(0, 1)
    video = frames.reshape(b, f, *frames.shape[1:]).transpose(1, 2)  # (b f) c H W -> b c f H W
    assert video.shape == t["out.video"].shape
    assert (video.double() - t["out.video"].double()).abs().max().item() <= 2e-4


@pytest.fixture(scope="module")
def tiny_vae() -> VAE:
    return randomize_(VAE(TINY.vae), seed=1).eval()


def _legacy(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict under diffusers < 0.14 names, attention weights stored as 1x1 convs."""
    current_to_legacy = {f".{new}.": f".{old}." for old, new in LEGACY_ATTENTION_NAMES.items()}
    legacy = {}
    for name, tensor in sd.items():
        for new, old in current_to_legacy.items():
            if ".attentions." in name and new in name:
                name = name.replace(new, old)
                tensor = tensor[:, :, None, None] if tensor.dim() == 2 else tensor  # c_out c_in -> c_out c_in 1 1
        legacy[name] = tensor
    return legacy


def test_legacy_names_normalize_to_ours(tiny_vae: VAE):
    sd = tiny_vae.state_dict()
    legacy = _legacy(sd)
    assert any(k.endswith("attentions.0.proj_attn.weight") and v.dim() == 4 for k, v in legacy.items())
    vae = VAE(TINY.vae).eval()
    vae.load_state_dict(normalize_vae_state_dict(legacy), strict=True)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        z = tiny_vae.encode_mean(x)
        assert torch.equal(vae.encode_mean(x), z)
        assert torch.equal(vae.decode(z), tiny_vae.decode(z))
    assert normalize_vae_state_dict(sd).keys() == sd.keys()  # current names pass through


def test_odd_sizes_round_trip_shapes(tiny_vae: VAE):
    x = torch.rand(2, 3, 64, 96) * 2 - 1
    with torch.no_grad():
        z = tiny_vae.encode_mean(x)
        assert z.shape == (2, TINY.vae.latent_channels, 64 // TINY.vae.downscale, 96 // TINY.vae.downscale)
        assert tiny_vae.decode(z).shape == x.shape


def _diffusers_dir(tmp_path: Path, sd: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    c = TINY.vae
    (tmp_path / "config.json").write_text(json.dumps(dict(
        _class_name="AutoencoderKL", block_out_channels=list(c.block_out_channels), layers_per_block=c.layers_per_block,
        latent_channels=c.latent_channels, norm_num_groups=c.norm_num_groups, scaling_factor=c.scaling_factor)))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    return tmp_path


def test_legacy_diffusers_dir_loads(tmp_path: Path, tiny_vae: VAE):
    vae = load_vae(_diffusers_dir(tmp_path, _legacy(tiny_vae.state_dict())))
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(vae.encode_mean(x), tiny_vae.encode_mean(x))


def test_wrong_vae_is_refused(tmp_path: Path, tiny_vae: VAE):
    sd = tiny_vae.state_dict()
    sd.pop("decoder.conv_out.bias")
    with pytest.raises(CheckpointError, match="decoder.conv_out.bias"):
        load_vae(_diffusers_dir(tmp_path, sd))
    with pytest.raises(CheckpointError, match="not found"):
        load_vae(tmp_path / "nowhere")
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_vae(tmp_path)
