"""EchoMimic: its weight layout and merge order, context windows, face mask and crop, the renderer and refusals."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emo.checkpoints.echomimic_dir import (
    BASE_UNET,
    WHISPER_FILE,
    load_echomimic_dir,
    random_echomimic_models,
)
from emo.checkpoints.names import emo_to_hallo
from emo.checkpoints.state_dict import CheckpointError
from emo.config import ECHOMIMIC_TINY
from emo.errors import InputError
from emo.preprocess.echo_face import echo_portrait, face_mask, square_crop_rect
from emo.preprocess.whisper_features import chunk_count, feature_step_count
from emo.sampling.context_windows import ContextWindows


def _ref_names(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {emo_to_hallo(k): v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def write_echomimic_dir(root: Path, family: str = "echomimic-acc", seed: int = 3) -> dict:
    """A tiny EchoMimic `pretrained_weights` directory in the published layout, from seeded random modules.
    Returns the modules' state dicts (reference names) the loader must reproduce."""
    from safetensors.torch import save_file

    models = random_echomimic_models(seed, ECHOMIMIC_TINY, family)
    net = models.net
    suffix = "_acc" if family == "echomimic-acc" else ""
    ref, den, face = _ref_names(net.reference_unet), _ref_names(net.denoising_unet), _ref_names(net.face_locator)
    motion = {k: v for k, v in den.items() if ".motion_modules." in k}
    # the denoiser file leaves conv_in to the base UNet, and overrides the base's time embedding
    den_file = {k: v for k, v in den.items() if ".motion_modules." not in k and not k.startswith("conv_in.")}
    base = {k: v for k, v in ref.items()}  # the image-variations UNet: the ReferenceNet's shapes, 2D names
    base["conv_in.weight"], base["conv_in.bias"] = den["conv_in.weight"], den["conv_in.bias"]
    base["time_embedding.linear_1.weight"] = torch.zeros_like(base["time_embedding.linear_1.weight"])
    c0 = ECHOMIMIC_TINY.unet.block_out_channels[0]
    base["conv_out.weight"], base["conv_out.bias"] = torch.zeros(4, c0, 3, 3), torch.zeros(4)  # unused at runtime
    ref_file = dict(ref, **{"conv_out.weight": base["conv_out.weight"], "conv_out.bias": base["conv_out.bias"]})
    root.mkdir(parents=True, exist_ok=True)
    torch.save(ref_file, root / "reference_unet.pth")
    torch.save(den_file, root / f"denoising_unet{suffix}.pth")
    torch.save(motion, root / f"motion_module{suffix}.pth")
    torch.save(face, root / "face_locator.pth")
    u = ECHOMIMIC_TINY.unet
    (root / BASE_UNET).mkdir(parents=True)
    (root / BASE_UNET / "config.json").write_text(json.dumps(dict(
        block_out_channels=list(u.block_out_channels), layers_per_block=u.layers_per_block, attention_head_dim=u.heads,
        cross_attention_dim=u.cross_attention_dim,
        down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3)))
    save_file(base, str(root / BASE_UNET / "diffusion_pytorch_model.safetensors"))
    vae_dir = root / "sd-vae-ft-mse"
    vae_dir.mkdir()
    c = models.vae.cfg
    (vae_dir / "config.json").write_text(json.dumps(dict(
        block_out_channels=list(c.block_out_channels), layers_per_block=c.layers_per_block,
        latent_channels=c.latent_channels, norm_num_groups=c.norm_num_groups, scaling_factor=c.scaling_factor)))
    save_file({k: v.contiguous() for k, v in models.vae.state_dict().items()},
              str(vae_dir / "diffusion_pytorch_model.safetensors"))
    w = models.audio_encoder.cfg
    whisper = {f"encoder.{k}": v.contiguous() for k, v in models.audio_encoder.state_dict().items()}
    whisper["decoder.token_embedding.weight"] = torch.zeros(8, w.n_state)  # a text decoder the runtime ignores
    (root / WHISPER_FILE).parent.mkdir(parents=True)
    torch.save({"dims": dict(n_mels=w.n_mels, n_audio_ctx=w.n_ctx, n_audio_state=w.n_state, n_audio_head=w.n_head,
                             n_audio_layer=w.n_layer, n_vocab=8, n_text_ctx=4, n_text_state=w.n_state,
                             n_text_head=w.n_head, n_text_layer=1), "model_state_dict": whisper}, root / WHISPER_FILE)
    return {"reference": ref, "denoiser": den, "face": face}


@pytest.fixture(scope="module")
def echo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("echomimic") / "pretrained_weights"
    return root, write_echomimic_dir(root)


def test_loader_merges_as_the_reference_does(echo_dir):
    root, want = echo_dir
    models = load_echomimic_dir(root)
    assert models.family == "echomimic-acc" and models.cfg.family == "echomimic"
    got = _ref_names(models.net.denoising_unet)
    assert got.keys() == want["denoiser"].keys()
    for k, v in want["denoiser"].items():  # conv_in from the base, the time embedding from the denoiser file
        assert torch.equal(got[k], v), k
    for k, v in _ref_names(models.net.reference_unet).items():
        assert torch.equal(v, want["reference"][k]), k
    r = models.report
    assert r.unused["reference_unet.pth"] == ["conv_out.weight", "conv_out.bias"]
    assert r.unused[WHISPER_FILE] == ["decoder.token_embedding.weight"]
    assert r.taken["denoising_unet_acc.pth"] == len(want["denoiser"]) - 2 - r.taken["motion_module_acc.pth"]
    # the base's cross-attention K/V (64-wide context) do not fit the denoiser's audio (384): the file's are used
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight" in want["denoiser"]


def test_loader_names_what_is_missing_or_misshaped(echo_dir, tmp_path):
    import shutil

    root, _ = echo_dir
    bad = tmp_path / "w"
    shutil.copytree(root, bad)
    (bad / "face_locator.pth").unlink()
    with pytest.raises(InputError, match=r"lacks face_locator\.pth"):
        load_echomimic_dir(bad)
    shutil.copy(root / "face_locator.pth", bad / "face_locator.pth")
    sd = torch.load(bad / "denoising_unet_acc.pth", weights_only=True)
    name = "mid_block.attentions.0.proj_in.weight"
    sd[name] = sd[name][:, :16]
    torch.save(sd, bad / "denoising_unet_acc.pth")
    with pytest.raises(CheckpointError, match=rf"denoising_unet_acc\.pth: {name} has shape \(32, 16, 1, 1\)"):
        load_echomimic_dir(bad)
    del sd[name]
    sd.pop("mid_block.attentions.0.proj_in.bias")
    torch.save(sd, bad / "denoising_unet_acc.pth")
    base = bad / BASE_UNET / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file, save_file

    b = load_file(str(base))
    b.pop(name)
    b.pop("mid_block.attentions.0.proj_in.bias")
    save_file(b, str(base))
    with pytest.raises(CheckpointError, match=r"no weights for 2 tensors .*mid_block\.attentions\.0\.proj_in"):
        load_echomimic_dir(bad)


def test_both_denoisers_need_a_family(echo_dir, tmp_path):
    import shutil

    root, _ = echo_dir
    both = tmp_path / "w"
    shutil.copytree(root, both)
    shutil.copy(root / "denoising_unet_acc.pth", both / "denoising_unet.pth")
    shutil.copy(root / "motion_module_acc.pth", both / "motion_module.pth")
    with pytest.raises(InputError, match="choose one with --family"):
        load_echomimic_dir(both)
    assert load_echomimic_dir(both, "echomimic").family == "echomimic"


def test_context_windows_wrap_and_shift():
    w = ContextWindows(12, 3)
    assert w.base(8) == [list(range(8))]
    assert w.at_step(8, 1) == [[2, 3, 4, 5, 6, 7, 0, 1]]  # a single window is rotated by the shift too
    assert w.base(16) == [list(range(12)), [9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4]]
    assert w.at_step(16, 3)[1] == [(j + 6) % 16 for j in w.base(16)[1]]
    assert w.base(19)[-1] == [18, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # closed loop: the last window wraps
    assert w.evaluations(16) == 24 and w.evaluations(8) == 8
    with pytest.raises(InputError, match="overlap"):
        ContextWindows(4, 4)


def test_face_mask_and_crop_follow_the_reference():
    box = (40.4, 30.6, 80.2, 90.5)  # rounded to (40, 31, 80, 90): 40 wide, 59 high
    m = face_mask(120, 160, box)
    ys, xs = np.nonzero(m)
    assert (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) == (31 - 5, 90 + 5, 40 - 4, 80 + 4)
    # grown by half: x 20..100, y 2..119 (clipped); squared about its centre with the shorter side (80)
    assert square_crop_rect(120, 160, box) == (20, 20, 100, 100)
    rgb = np.zeros((120, 160, 3), np.uint8)
    rgb[:, :, 0] = 255
    p = echo_portrait(rgb, box, 64)
    assert p.pixels.shape == (3, 64, 64) and p.face_mask.shape == (1, 64, 64)
    assert torch.equal(p.pixels[0], torch.ones(64, 64)) and torch.equal(p.pixels[1], -torch.ones(64, 64))
    assert set(p.face_mask.unique().tolist()) <= {0.0, 1.0} or p.face_mask.max() == 1.0


def test_models_dir_render_and_stats(echo_dir, tmp_path, speech_media):
    from emo.cli.run import main

    root, _ = echo_dir
    media = speech_media(1.0)
    stats = tmp_path / "s.json"
    rc = main([str(media / "face.png"), str(media / "voice.wav"), "-o", str(tmp_path / "e.mp4"), "--models", str(root),
               "--size", "128", "--steps", "2", "--stats", str(stats), "--quiet", "--device", "cpu"])
    assert rc == 0
    s = json.loads(stats.read_text())
    assert s["model"] == "echomimic-acc" and s["settings"]["guidance_scale"] == 1.0
    # 2 steps, no unconditional half, windows of 12 overlapping by 3 over the latent frames (one or two more than
    # the video keeps: EchoMimic's chunk count)
    latent = chunk_count(feature_step_count(16000), 24)
    assert s["frames"] == 24 and latent == 26
    assert s["unet_frame_evaluations"] == 2 * ContextWindows(12, 3).evaluations(latent) == 2 * 36
    assert (tmp_path / "e.mp4").stat().st_size > 0


@pytest.mark.parametrize("argv, message", [
    (["--speed", "fast"], "speed presets are Hallo's"),
    (["--motion-frames", "2"], "no motion frames"),
    (["--cache-interval", "2"], "not available for EchoMimic"),
    (["--backend", "onnxruntime"], "EchoMimic models run on the torch backend (not onnxruntime)"),
    (["--backend", "torch-fast", "--device", "cpu"], "EchoMimic models run on the torch backend (not torch-fast)"),
])
def test_echomimic_refusals(tmp_path, argv, message, capsys):
    from emo.cli.run import main

    rc = main(["--demo", "--family", "echomimic-acc", "-o", str(tmp_path / "x.mp4"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x.mp4").exists()


def test_hallo_directory_is_not_echomimic(tmp_path, capsys):
    from emo.cli.run import main

    (tmp_path / "hallo").mkdir()
    rc = main(["--models", str(tmp_path), "--family", "echomimic", "-o", str(tmp_path / "x.mp4"), "a.png", "b.wav"])
    err = capsys.readouterr().err
    assert rc == 2 and "not in EchoMimic's pretrained_weights layout" in err
