"""Golden cases from the public EchoMimic inference code (github.com/antgroup/echomimic), tiny recipe weights.

Run with the reference environment (torch 2.2.2, diffusers 0.24.0, see the golden README) and the EchoMimic checkout
and this repository on the path:

    PYTHONPATH=$ECHOMIMIC_SRC:$REPO python tests/data/golden/make/echomimic_golden.py [CASE ...] [--out DIR]

Per case it writes `<case>.json` (configs, run settings, provenance, weight manifests, float32-vs-float64 noise) and
`<case>.safetensors` (inputs `in.*`, outputs `out.*`). No weights are stored: every tensor of every reference file is
`emo.golden.recipe.recipe_tensor(prefix + name, shape)` (prefix = file stem + "."; whisper's LayerNorm scales
`<module>.weight` are seeded as "whisper.<module>.norm.weight" so the recipe's norm rule applies, as in
`echomimic_whisper.py`; whisper's `encoder.positional_embedding` buffer keeps the sinusoids the module computes).
The files are saved in EchoMimic's layout into a temporary folder and loaded back the way `infer_audio2vid[_acc].py`
does. Each case is run twice, in float32 (the recorded outputs) and in float64 (only to measure the reference's own
float32 rounding noise; see `_float64_patches`). `--sd15-keys` writes `echomimic_sd15_keys.tsv` instead.
The working directory must be the EchoMimic checkout (the infer config path is relative), patched as listed in
PATCHES.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import cv2
import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import save_file

from emo.golden.recipe import RECIPE, fingerprint, recipe_tensor

REPO = Path(__file__).resolve().parents[4]
OUT_DIR = REPO / "tests" / "data" / "golden"
SAMPLE_RATE = 16000
SIZE = 128  # frame height = width in pixels (64 would leave 1x1 maps at the UNet's deepest level)

# The sd-image-variations-diffusers unet/config.json, with the tiny widths, one layer per block, 16x16 latents.
BASE_UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [32, 32, 32, 32],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 1,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": SIZE // 8,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
# sd-vae-ft-mse/config.json with the tiny widths and one layer per block.
VAE_CONFIG = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [32, 32, 64, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": SIZE,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
# whisper-tiny's audio encoder as it is; a tiny, never-run text decoder.
WHISPER_DIMS = {
    "n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6, "n_audio_layer": 4,
    "n_vocab": 64, "n_text_ctx": 8, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 1,
}
FACE_LOCATOR_ARGS = {"conditioning_embedding_channels": 32, "conditioning_channels": 1,
                     "block_out_channels": [16, 32, 96, 256]}

CASES = {
    "echomimic_acc_a": {
        "pipeline": "acc", "steps": 6, "cfg": 1.0, "frames": 16, "fps": 24, "context_frames": 12,
        "context_overlap": 3, "seed": 420, "audio_samples": 11520, "image_hw": [160, 192],
        "face_box_xyxy": [70.4, 49.6, 121.8, 110.3], "video_frames_kept": [0, 15],
    },
    "echomimic_b": {
        "pipeline": "normal", "steps": 3, "cfg": 2.5, "frames": 8, "fps": 25, "context_frames": 12,
        "context_overlap": 3, "seed": 7, "audio_samples": 6400, "image_hw": [144, 144],
        "face_box_xyxy": [20.2, 29.7, 80.4, 99.6], "video_frames_kept": [0, 3, 7],
    },
}
FACEMASK_DILATION, FACECROP_DILATION = 0.1, 0.5  # infer_audio2vid*.py defaults

PATCHES = [
    {
        "file": "src/models/mutual_self_attention.py",
        "why": "register_reference_hooks moves its classifier-free-guidance masks to a hard-coded CUDA device",
        "diff": '@@ -64 +64 @@\n-        device=torch.device("cuda"),\n+        device=torch.device("cpu"),\n',
    },
]
SCRIPT_DEVIATIONS = [
    "the infer script's `.to(\"cuda\", ...)` calls (VAE, face locator, face-mask tensor, pipeline) use the CPU",
    "MTCNN is not run: the face box is given (the script's own select_face result format, xyxy floats)",
    "the prompt yaml is animation[_acc].yaml with paths into the temporary folder and weight_dtype fp32 (fp64 run)",
    "video writing (save_videos_grid, moviepy) is skipped; the pipeline's `videos` tensor is the output",
]


# ----------------------------------------------------------------------------------------------- recipe weights
def _recipe_name(prefix: str, name: str, shape: tuple[int, ...]) -> str:
    if prefix == "whisper." and len(shape) == 1 and name.endswith(".weight"):  # whisper's 1-D weights: LayerNorms
        return "whisper." + name[: -len(".weight")] + ".norm.weight"
    return prefix + name


def recipe_state_dict(template: dict[str, torch.Tensor], prefix: str, keep: tuple[str, ...] = ()) -> dict:
    out = {}
    for name, t in template.items():
        if name in keep:
            out[name] = t.detach().to(torch.float32).clone()
        else:
            out[name] = recipe_tensor(_recipe_name(prefix, name, tuple(t.shape)), tuple(t.shape))
    return out


def manifest(sd: dict[str, torch.Tensor]) -> dict:
    return {k: list(v.shape) for k, v in sd.items()}


# ----------------------------------------------------------------------------------------------- inputs
def synth_image(seed: int, h: int, w: int) -> np.ndarray:
    """RGB uint8: smooth colour gradients, a bright ellipse ("face") and mild noise."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([
        0.5 + 0.4 * np.sin(xx / w * 3.1 + 0.3),
        0.5 + 0.4 * np.cos(yy / h * 2.7 + 0.5 * xx / w),
        0.5 + 0.3 * np.sin((xx + yy) / (h + w) * 5.0),
    ], axis=-1)
    cy, cx = 0.5 * h, 0.5 * w
    inside = ((yy - cy) / (0.3 * h)) ** 2 + ((xx - cx) / (0.22 * w)) ** 2 < 1.0
    img[inside] = 0.75 * img[inside] + 0.25 * np.array([0.95, 0.8, 0.7])
    img += rng.normal(0.0, 0.03, img.shape)
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def synth_audio(seed: int, n: int) -> np.ndarray:
    """int16 mono at 16 kHz: a few harmonics with a syllable-like envelope, plus noise."""
    rng = np.random.RandomState(seed)
    t = np.arange(n) / SAMPLE_RATE
    f0 = 140.0 + 30.0 * np.sin(2 * np.pi * 1.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    x = 0.25 * env * voice + 0.01 * rng.normal(size=n)
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes(samples.astype("<i2").tobytes())


def face_inputs(image_bgr: np.ndarray, box_xyxy: list[float], size: int) -> dict:
    """infer_audio2vid*.py's face-mask and crop block, with `select_bbox` given."""
    from src.utils.util import crop_and_pad

    face_img = image_bgr
    face_mask = np.zeros((face_img.shape[0], face_img.shape[1])).astype("uint8")
    xyxy = np.round(np.asarray(box_xyxy, dtype=np.float32)[:4]).astype("int")
    rb, re, cb, ce = xyxy[1], xyxy[3], xyxy[0], xyxy[2]
    r_pad = int((re - rb) * FACEMASK_DILATION)
    c_pad = int((ce - cb) * FACEMASK_DILATION)
    face_mask[rb - r_pad: re + r_pad, cb - c_pad: ce + c_pad] = 255
    mask_full = face_mask.copy()
    r_pad_crop = int((re - rb) * FACECROP_DILATION)
    c_pad_crop = int((ce - cb) * FACECROP_DILATION)
    crop_rect = [max(0, cb - c_pad_crop), max(0, rb - r_pad_crop), min(ce + c_pad_crop, face_img.shape[1]),
                 min(re + r_pad_crop, face_img.shape[0])]
    face_img, square = crop_and_pad(face_img, crop_rect)
    face_mask, _ = crop_and_pad(face_mask, crop_rect)
    face_img = cv2.resize(face_img, (size, size))
    face_mask = cv2.resize(face_mask, (size, size))
    return {
        "box_rounded_xyxy": [int(v) for v in xyxy], "mask_pad_rc": [r_pad, c_pad],
        "crop_pad_rc": [r_pad_crop, c_pad_crop],
        "crop_rect_xyxy": [int(v) for v in crop_rect], "square_crop_xyxy": [int(v) for v in square],
        "mask_full": mask_full, "face_img_bgr": face_img, "face_mask": face_mask,
    }


# ----------------------------------------------------------------------------------------------- reference files
def write_reference_files(root: Path, acc: bool) -> dict:
    """Save every file `infer_audio2vid[_acc].py` reads, with recipe tensors; return their manifests."""
    from diffusers import AutoencoderKL
    from src.models.face_locator import FaceLocator
    from src.models.unet_2d_condition import UNet2DConditionModel
    from src.models.unet_3d_echo import EchoUNet3DConditionModel
    from src.models.whisper.whisper.model import ModelDimensions, Whisper

    infer_cfg = OmegaConf.load("configs/inference/inference_v2.yaml")
    sfx = "_acc" if acc else ""
    files: dict[str, dict] = {}

    def record(key: str, rel: str, sd: dict, prefix: str, note: str = "") -> None:
        files[key] = {"path": rel, "recipe_prefix": prefix, "fingerprint": fingerprint(sd), "tensors": manifest(sd)}
        if note:
            files[key]["note"] = note

    # base model folder (sd-image-variations-diffusers/unet): read by the reference net and the denoiser
    base = UNet2DConditionModel(**{k: v for k, v in BASE_UNET_CONFIG.items() if not k.startswith("_")})
    base_sd = recipe_state_dict(base.state_dict(), "base_unet.")
    base.load_state_dict(base_sd)
    base.save_pretrained(root / "sd-image-variations-diffusers" / "unet")
    record("base_unet", "sd-image-variations-diffusers/unet/diffusion_pytorch_model.safetensors", base_sd,
           "base_unet.", "overwritten by reference_unet.pth and denoising_unet*.pth; kept for the loading path")

    ref_sd = recipe_state_dict(base.state_dict(), "reference_unet.")
    torch.save(ref_sd, root / "reference_unet.pth")
    record("reference_unet", "reference_unet.pth", ref_sd, "reference_unet.")

    unet_config = dict(BASE_UNET_CONFIG)
    unet_config["_class_name"] = "EchoUNet3DConditionModel"
    unet_config["down_block_types"] = ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"]
    unet_config["up_block_types"] = ["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3
    unet_config["mid_block_type"] = "UNetMidBlock3DCrossAttn"
    den = EchoUNet3DConditionModel.from_config(unet_config, **infer_cfg.unet_additional_kwargs)
    den_all = den.state_dict()
    mm_names = [k for k in den_all if ".motion_modules." in k]
    mm_sd = recipe_state_dict({k: den_all[k] for k in mm_names}, f"motion_module{sfx}.")
    torch.save(mm_sd, root / f"motion_module{sfx}.pth")
    record("motion_module", f"motion_module{sfx}.pth", mm_sd, f"motion_module{sfx}.")
    den_sd = recipe_state_dict({k: v for k, v in den_all.items() if k not in mm_sd}, f"denoising_unet{sfx}.")
    torch.save(den_sd, root / f"denoising_unet{sfx}.pth")
    record("denoising_unet", f"denoising_unet{sfx}.pth", den_sd, f"denoising_unet{sfx}.")

    fl = FaceLocator(FACE_LOCATOR_ARGS["conditioning_embedding_channels"],
                     conditioning_channels=FACE_LOCATOR_ARGS["conditioning_channels"],
                     block_out_channels=tuple(FACE_LOCATOR_ARGS["block_out_channels"]))
    fl_sd = recipe_state_dict(fl.state_dict(), "face_locator.")
    torch.save(fl_sd, root / "face_locator.pth")
    record("face_locator", "face_locator.pth", fl_sd, "face_locator.")

    vae = AutoencoderKL(**{k: v for k, v in VAE_CONFIG.items() if not k.startswith("_")})
    vae_sd = recipe_state_dict(vae.state_dict(), "vae.")
    vae.load_state_dict(vae_sd)
    vae.save_pretrained(root / "sd-vae-ft-mse")
    record("vae", "sd-vae-ft-mse/diffusion_pytorch_model.safetensors", vae_sd, "vae.")

    wm = Whisper(ModelDimensions(**WHISPER_DIMS))
    w_sd = recipe_state_dict(wm.state_dict(), "whisper.", keep=("encoder.positional_embedding",))
    (root / "audio_processor").mkdir()
    torch.save({"dims": dict(WHISPER_DIMS), "model_state_dict": w_sd}, root / "audio_processor" / "whisper_tiny.pt")
    record("whisper", "audio_processor/whisper_tiny.pt", w_sd, "whisper.",
           "1-D weights (LayerNorm scales '<module>.weight') use the recipe name 'whisper.<module>.norm.weight'; "
           "encoder.positional_embedding is the module's own sinusoids(1500, 384) in float32, not a recipe tensor "
           "(fingerprint " + fingerprint({"encoder.positional_embedding": w_sd["encoder.positional_embedding"]})
           + "); the encoder.* tensors alone have fingerprint "
           + fingerprint({k: v for k, v in w_sd.items() if k.startswith("encoder.")}))

    prompt = {
        "pretrained_base_model_path": str(root / "sd-image-variations-diffusers"),
        "pretrained_vae_path": str(root / "sd-vae-ft-mse"),
        "audio_model_path": str(root / "audio_processor" / "whisper_tiny.pt"),
        "denoising_unet_path": str(root / f"denoising_unet{sfx}.pth"),
        "reference_unet_path": str(root / "reference_unet.pth"),
        "face_locator_path": str(root / "face_locator.pth"),
        "motion_module_path": str(root / f"motion_module{sfx}.pth"),
        "inference_config": "./configs/inference/inference_v2.yaml",
        "weight_dtype": "fp32",
    }
    OmegaConf.save(OmegaConf.create(prompt), root / f"animation{sfx}.yaml")
    return {"files": files, "unet_config_3d": unet_config, "prompt_yaml": root / f"animation{sfx}.yaml"}


def load_like_infer_script(config_path: Path, weight_dtype: torch.dtype) -> dict:
    """The model_init block of infer_audio2vid[_acc].py (device "cpu" for its "cuda")."""
    from diffusers import AutoencoderKL
    from src.models.face_locator import FaceLocator
    from src.models.unet_2d_condition import UNet2DConditionModel
    from src.models.unet_3d_echo import EchoUNet3DConditionModel
    from src.models.whisper.audio2feature import load_audio_model

    config = OmegaConf.load(config_path)
    device = "cpu"
    infer_config = OmegaConf.load(config.inference_config)
    vae = AutoencoderKL.from_pretrained(config.pretrained_vae_path).to(device, dtype=weight_dtype)
    reference_unet = UNet2DConditionModel.from_pretrained(
        config.pretrained_base_model_path, subfolder="unet").to(dtype=weight_dtype, device=device)
    reference_unet.load_state_dict(torch.load(config.reference_unet_path, map_location="cpu"))
    assert os.path.exists(config.motion_module_path)
    denoising_unet = EchoUNet3DConditionModel.from_pretrained_2d(
        config.pretrained_base_model_path, config.motion_module_path, subfolder="unet",
        unet_additional_kwargs=infer_config.unet_additional_kwargs).to(dtype=weight_dtype, device=device)
    report = denoising_unet.load_state_dict(torch.load(config.denoising_unet_path, map_location="cpu"), strict=False)
    face_locator = FaceLocator(FACE_LOCATOR_ARGS["conditioning_embedding_channels"], conditioning_channels=1,
                               block_out_channels=tuple(FACE_LOCATOR_ARGS["block_out_channels"])).to(
        dtype=weight_dtype, device=device)
    face_locator.load_state_dict(torch.load(config.face_locator_path))
    audio_processor = load_audio_model(model_path=config.audio_model_path, device=device)
    if weight_dtype == torch.float64:
        audio_processor.model.double()
    return {
        "vae": vae, "reference_unet": reference_unet, "denoising_unet": denoising_unet, "face_locator": face_locator,
        "audio_processor": audio_processor, "infer_config": infer_config,
        "strict_false": {"missing_keys": list(report.missing_keys), "unexpected_keys": list(report.unexpected_keys)},
    }


# ----------------------------------------------------------------------------------------------- float64 run
class _TorchF64Proxy:
    """`torch` for whisper's transcribe.py with `float32` meaning float64 (its only dtype choice on CPU)."""

    float32 = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


@contextlib.contextmanager
def _float64_patches(pipe_module):
    """Changes for the float64 run only; each keeps the reference's math and only removes a float32 cast.

    1. torch's default dtype is float64 (the pipeline's `torch.Tensor(whisper_chunks)` and face-mask tensor, the
       stft window); 2. the initial noise is drawn in float32 and cast (randn in float64 gives other numbers);
    3. whisper: transcribe.py casts the mel to float32 on CPU (its `torch.float32` is float64 here), the mel
    filters and the waveform are cast to float64 (both are exact float32 values), and LayerNorm / attention
    softmax skip their `.float()` casts.
    """
    wmod = importlib.import_module("src.models.whisper.whisper.model")
    wtr = importlib.import_module("src.models.whisper.whisper.transcribe")
    waud = importlib.import_module("src.models.whisper.whisper.audio")
    saved = {
        "default": torch.get_default_dtype(), "randn": pipe_module.randn_tensor, "wtr_torch": wtr.torch,
        "logmel": wtr.log_mel_spectrogram, "filters": waud.mel_filters, "ln": wmod.LayerNorm.forward,
        "qkv": wmod.MultiHeadAttention.qkv_attention,
    }
    orig_randn, orig_logmel, orig_filters = saved["randn"], saved["logmel"], saved["filters"]

    def randn32(shape, generator=None, device=None, dtype=None, layout=None):
        return orig_randn(shape, generator=generator, device=device, dtype=torch.float32).to(dtype)

    def logmel64(audio, *args, **kwargs):
        if isinstance(audio, str):
            audio = torch.from_numpy(waud.load_audio(audio)).to(torch.float64)
        return orig_logmel(audio, *args, **kwargs)

    def ln64(self, x):
        return torch.nn.LayerNorm.forward(self, x)

    def qkv64(self, q, k, v, mask=None):
        n_batch, n_ctx, n_state = q.shape
        scale = (n_state // self.n_head) ** -0.25
        q = q.view(*q.shape[:2], self.n_head, -1).permute(0, 2, 1, 3) * scale
        k = k.view(*k.shape[:2], self.n_head, -1).permute(0, 2, 3, 1) * scale
        v = v.view(*v.shape[:2], self.n_head, -1).permute(0, 2, 1, 3)
        qk = q @ k
        if mask is not None:
            qk = qk + mask[:n_ctx, :n_ctx]
        w = torch.nn.functional.softmax(qk, dim=-1).to(q.dtype)
        return (w @ v).permute(0, 2, 1, 3).flatten(start_dim=2)

    torch.set_default_dtype(torch.float64)
    pipe_module.randn_tensor = randn32
    wtr.torch = _TorchF64Proxy()
    wtr.log_mel_spectrogram = logmel64
    waud.mel_filters = lambda device, n_mels=80: orig_filters(device, n_mels).to(torch.float64)
    wmod.LayerNorm.forward = ln64
    wmod.MultiHeadAttention.qkv_attention = qkv64
    try:
        yield
    finally:
        torch.set_default_dtype(saved["default"])
        pipe_module.randn_tensor = saved["randn"]
        wtr.torch = saved["wtr_torch"]
        wtr.log_mel_spectrogram = saved["logmel"]
        waud.mel_filters = saved["filters"]
        wmod.LayerNorm.forward = saved["ln"]
        wmod.MultiHeadAttention.qkv_attention = saved["qkv"]


# ----------------------------------------------------------------------------------------------- one run
def run_case(case: dict, files: dict, wav_path: Path, face: dict, weight_dtype: torch.dtype) -> dict:
    from diffusers import DDIMScheduler
    from src.pipelines.context import get_context_scheduler

    acc = case["pipeline"] == "acc"
    pipe_module = importlib.import_module(
        "src.pipelines.pipeline_echo_mimic_acc" if acc else "src.pipelines.pipeline_echo_mimic")
    patches = _float64_patches(pipe_module) if weight_dtype == torch.float64 else contextlib.nullcontext()
    rec: dict = {}
    with patches:
        m = load_like_infer_script(files["prompt_yaml"], weight_dtype)
        scheduler = DDIMScheduler(**OmegaConf.to_container(m["infer_config"].noise_scheduler_kwargs))
        pipe = pipe_module.Audio2VideoPipeline(
            vae=m["vae"], reference_unet=m["reference_unet"], denoising_unet=m["denoising_unet"],
            audio_guider=m["audio_processor"], face_locator=m["face_locator"], scheduler=scheduler)
        pipe = pipe.to("cpu", dtype=weight_dtype)
        pipe.set_progress_bar_config(disable=True)
        rec["strict_false"] = m["strict_false"]

        # recording hooks (outputs only; no math changes)
        guider = m["audio_processor"]
        orig_a2f, orig_f2c, orig_sliced = guider.audio2feat, guider.feature2chunks, guider.get_sliced_feature
        chunk_idx: list = []

        def audio2feat(audio_path):
            out = orig_a2f(audio_path)
            rec["whisper_features"] = torch.from_numpy(np.array(out))
            return out

        def get_sliced_feature(*args, **kwargs):
            feat, idx = orig_sliced(*args, **kwargs)
            chunk_idx.append(list(idx))
            return feat, idx

        def feature2chunks(*args, **kwargs):
            out = orig_f2c(*args, **kwargs)
            rec["whisper_chunks"] = torch.from_numpy(np.array(out))
            rec["whisper_chunk_idx"] = torch.tensor(chunk_idx, dtype=torch.int32)
            return out

        guider.audio2feat, guider.feature2chunks, guider.get_sliced_feature = audio2feat, feature2chunks, \
            get_sliced_feature
        orig_prep = pipe.prepare_latents

        def prepare_latents(*args, **kwargs):
            out = orig_prep(*args, **kwargs)
            rec["latents_init"] = out.clone()
            state["latents"] = out.clone()
            return out

        pipe.prepare_latents = prepare_latents
        state: dict = {"step": 0, "calls": []}
        def face_locator_hook(mod, args, out):
            rec.setdefault("face_locator", out.clone())

        def reference_unet_pre(mod, args):
            rec.setdefault("ref_latents", args[0].clone())

        m["face_locator"].register_forward_hook(face_locator_hook)
        m["reference_unet"].register_forward_pre_hook(reference_unet_pre)

        def unet_pre(mod, args, kwargs):
            state["calls"].append((state["step"], args[0].clone()))

        m["denoising_unet"].register_forward_pre_hook(unet_pre, with_kwargs=True)
        orig_step = scheduler.step
        steps_out, timesteps = [], []

        @functools.wraps(orig_step)
        def step(model_output, timestep, sample, *args, **kwargs):
            out = orig_step(model_output, timestep, sample, *args, **kwargs)
            if state["step"] == 0:
                rec["step0_model_output"] = model_output.clone()
            steps_out.append(out.prev_sample.clone())
            timesteps.append(int(timestep))
            state["step"] += 1
            return out

        scheduler.step = step

        generator = torch.manual_seed(case["seed"])
        ref_image_pil = Image.fromarray(face["face_img_bgr"][:, :, [2, 1, 0]])
        face_mask_tensor = torch.Tensor(face["face_mask"]).to(dtype=weight_dtype, device="cpu").unsqueeze(
            0).unsqueeze(0).unsqueeze(0) / 255.0
        video = pipe(
            ref_image_pil, str(wav_path), face_mask_tensor, SIZE, SIZE, case["frames"], case["steps"], case["cfg"],
            generator=generator, audio_sample_rate=SAMPLE_RATE, context_frames=case["context_frames"],
            fps=case["fps"], context_overlap=case["context_overlap"]).videos

    # context windows: the pipeline's own queue and shift, checked against the frames each denoiser call saw
    video_length = rec["latents_init"].shape[2]
    queue = list(get_context_scheduler("uniform")(0, case["steps"], video_length, case["context_frames"], 1,
                                                  case["context_overlap"]))
    windows = [[[(f + t_i * 2) % video_length for f in w] for w in queue] for t_i in range(case["steps"])]
    assert len(state["calls"]) == sum(len(w) for w in windows)
    latents_before = [rec["latents_init"]] + steps_out[:-1]
    for n, (t_i, sample) in enumerate(state["calls"]):
        w = windows[t_i][n % len(queue)]
        assert torch.equal(sample[:1], latents_before[t_i][:, :, w]), (t_i, n)
    rec["context_windows"] = torch.tensor(windows, dtype=torch.int32)
    rec["timesteps"] = torch.tensor(timesteps, dtype=torch.int64)
    rec["latents_steps"] = torch.stack(steps_out)
    rec["latents_final"] = steps_out[-1]
    rec["video"] = video[:, :, case["video_frames_kept"]].clone()
    feats = rec["whisper_features"]
    gathered = feats[rec["whisper_chunk_idx"].long()].reshape(len(chunk_idx), -1, feats.shape[-1])
    assert torch.equal(gathered, rec["whisper_chunks"].to(gathered.dtype)), "chunks are not a gather of features"
    return rec


def versions() -> dict:
    import diffusers
    import einops
    import huggingface_hub
    import omegaconf
    import safetensors
    import transformers

    ff = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()
    return {
        "python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
        "transformers": transformers.__version__, "huggingface_hub": huggingface_hub.__version__,
        "numpy": np.__version__, "einops": einops.__version__, "omegaconf": omegaconf.__version__,
        "safetensors": safetensors.__version__, "opencv": cv2.__version__, "ffmpeg": ff[0] if ff else None,
    }


OUTPUTS = ["whisper_features", "face_locator", "ref_latents", "latents_init", "step0_model_output", "latents_steps",
           "latents_final", "video"]


def make_case(name: str, out_dir: Path) -> None:
    case = CASES[name]
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        weights_root = root / "pretrained_weights"
        weights_root.mkdir()
        files = write_reference_files(weights_root, acc=case["pipeline"] == "acc")
        h0, w0 = case["image_hw"]
        image = synth_image(case["seed"], h0, w0)
        cv2.imwrite(str(root / "ref.png"), image[:, :, ::-1])
        image_bgr = cv2.imread(str(root / "ref.png"))
        assert np.array_equal(image_bgr[:, :, ::-1], image)
        face = face_inputs(image_bgr, case["face_box_xyxy"], SIZE)
        audio = synth_audio(case["seed"] + 1, case["audio_samples"])
        wav_path = root / "audio.wav"
        write_wav(wav_path, audio)
        r32 = run_case(case, files, wav_path, face, torch.float32)
        r64 = run_case(case, files, wav_path, face, torch.float64)

    assert torch.equal(r64["latents_init"], r32["latents_init"].double())
    assert torch.equal(r64["context_windows"], r32["context_windows"])
    noise = {}
    for key in OUTPUTS:
        d = r32[key].double() - r64[key].double()
        ref = r64[key].double()
        noise[key] = {"max_abs": float(d.abs().max()), "rms": float(d.pow(2).mean().sqrt()),
                      "max_abs_ref": float(ref.abs().max()), "rms_ref": float(ref.pow(2).mean().sqrt())}

    tensors = {
        "in.image_rgb": torch.from_numpy(image.copy()),
        "in.face_box_xyxy": torch.tensor(case["face_box_xyxy"], dtype=torch.float32),
        "in.face_mask_full": torch.from_numpy(face["mask_full"].copy()),
        "in.crop_rect_xyxy": torch.tensor(face["crop_rect_xyxy"], dtype=torch.int32),
        "in.square_crop_xyxy": torch.tensor(face["square_crop_xyxy"], dtype=torch.int32),
        "in.ref_image_rgb": torch.from_numpy(np.ascontiguousarray(face["face_img_bgr"][:, :, ::-1])),
        "in.face_mask": torch.from_numpy(face["face_mask"].copy()),
        "in.audio_int16": torch.from_numpy(audio.copy()),
        "out.whisper_features": r32["whisper_features"].float(),
        "out.whisper_chunk_idx": r32["whisper_chunk_idx"],
        "out.face_locator": r32["face_locator"],
        "out.ref_latents": r32["ref_latents"],
        "out.latents_init": r32["latents_init"],
        "out.step0_model_output": r32["step0_model_output"],
        "out.latents_steps": r32["latents_steps"],
        "out.latents_final": r32["latents_final"],
        "out.timesteps": r32["timesteps"],
        "out.context_windows": r32["context_windows"],
        "out.video": r32["video"],
    }
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, str(out_dir / f"{name}.safetensors"))
    os.chmod(out_dir / f"{name}.safetensors", 0o644)

    cmd_case = " ".join(sys.argv[1:]) or name
    meta = {
        "case": name,
        "kind": "echomimic",
        "reference": {"repo": "github.com/antgroup/echomimic", "commit": "a53e97040398ddae5d26df0d2054a8f1e9f9df6d",
                      "pipeline": "src/pipelines/pipeline_echo_mimic_acc.py" if case["pipeline"] == "acc"
                      else "src/pipelines/pipeline_echo_mimic.py",
                      "script": "infer_audio2vid_acc.py" if case["pipeline"] == "acc" else "infer_audio2vid.py",
                      "patches": PATCHES, "script_deviations": SCRIPT_DEVIATIONS},
        "made_with": {
            "command": "cd $ECHOMIMIC_SRC && PYTHONPATH=$ECHOMIMIC_SRC:$REPO $ECHO_VENV/bin/python "
                       "$REPO/tests/data/golden/make/echomimic_golden.py " + cmd_case,
            "versions": versions(), "device": "cpu", "dtype": "float32",
        },
        "run": {**case, "width": SIZE, "height": SIZE, "L": case["frames"], "audio_sample_rate": SAMPLE_RATE,
                "context_schedule": "uniform", "context_stride": 1, "context_batch_size": 1, "eta": 0.0,
                "interpolation_factor": 1, "facemusk_dilation_ratio": FACEMASK_DILATION,
                "facecrop_dilation_ratio": FACECROP_DILATION,
                "generator": "torch.manual_seed(seed) (the global CPU generator), as the infer script does",
                "video_length": int(r32["latents_init"].shape[2]),
                "whisper_chunks_shape": list(r32["whisper_chunks"].shape)},
        "face": {k: face[k] for k in ("box_rounded_xyxy", "mask_pad_rc", "crop_pad_rc", "crop_rect_xyxy",
                                      "square_crop_xyxy")},
        "configs": {
            "base_unet": BASE_UNET_CONFIG, "denoising_unet_2d_config": files["unet_config_3d"],
            "unet_additional_kwargs": OmegaConf.to_container(OmegaConf.load(
                "configs/inference/inference_v2.yaml").unet_additional_kwargs),
            "noise_scheduler_kwargs": OmegaConf.to_container(OmegaConf.load(
                "configs/inference/inference_v2.yaml").noise_scheduler_kwargs),
            "vae": VAE_CONFIG, "face_locator": FACE_LOCATOR_ARGS, "whisper_dims": WHISPER_DIMS,
        },
        "weights": {
            "recipe": RECIPE,
            "rule": "each file's tensor NAME of SHAPE is recipe_tensor(prefix + NAME, SHAPE), prefix = the file's "
                    "recipe_prefix; exceptions are noted per file",
            "files": {k: {kk: vv for kk, vv in v.items()} for k, v in files["files"].items()},
            "denoising_unet_strict_false": _strict_false_summary(r32["strict_false"], files["files"]),
        },
        "outputs": {
            "whisper_features": "audio2feat(): (T, n_audio_layer + 1, 384) encoder embeddings (input + each block)",
            "whisper_chunk_idx": "feature2chunks(): per chunk the 10 feature rows it gathers; chunk i = "
                                 "whisper_features[idx[i]].reshape(50, 384) exactly (checked)",
            "face_locator": "face_locator(face_mask_tensor) (conditional half; the unconditional half is zeros)",
            "ref_latents": "vae.encode(ref).latent_dist.mean * 0.18215, the reference net's input",
            "latents_init": "randn (global generator) clamped to +-1.5, times init_noise_sigma",
            "step0_model_output": "the model_output passed to scheduler.step at step 0 (guided, window-averaged)",
            "latents_steps": "prev_sample after each scheduler.step, (steps, 1, 4, F, h, w)",
            "latents_final": "= latents_steps[-1]",
            "timesteps": "scheduler timesteps",
            "context_windows": "(steps, windows, context_frames): frames of each window after the (+2 t_i) % F shift",
            "video": "the pipeline's videos output, frames run.video_frames_kept only (decoding is per frame)",
        },
        "float32_vs_float64": noise,
    }
    text = json.dumps(meta, indent=1, default=_json_default)
    text = re.sub(r"\[\n\s+(-?\d+(?:,\n\s+-?\d+)*)\n\s+\]", _one_line, text)
    with open(out_dir / f"{name}.json", "w") as f:
        f.write(text + "\n")
    print(name, json.dumps(noise, indent=1))


def _one_line(mt: re.Match) -> str:
    return "[" + ", ".join(x.strip() for x in mt.group(1).split(",")) + "]"


def _strict_false_summary(report: dict, files: dict) -> dict:
    """strict=False report of denoising_unet*.pth; a missing-key list equal to the motion-module file's is named."""
    mm_names = list(files["motion_module"]["tensors"])
    out = {"missing_count": len(report["missing_keys"]), "unexpected_keys": report["unexpected_keys"]}
    if sorted(report["missing_keys"]) == sorted(mm_names):
        out["missing_keys"] = "exactly the tensor names of the motion_module file (loaded by from_pretrained_2d)"
    else:
        out["missing_keys"] = report["missing_keys"]
    return out


def _json_default(o):
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def write_sd15_keys(path: Path) -> None:
    """file, name, shape, dtype of every tensor of the four EchoMimic files at real size (built on the meta device)."""
    from src.models.face_locator import FaceLocator
    from src.models.unet_2d_condition import UNet2DConditionModel
    from src.models.unet_3d_echo import EchoUNet3DConditionModel

    real = dict(BASE_UNET_CONFIG, block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, sample_size=64)
    infer_cfg = OmegaConf.load("configs/inference/inference_v2.yaml")
    with torch.device("meta"):
        ref = UNet2DConditionModel(**{k: v for k, v in real.items() if not k.startswith("_")}).state_dict()
        cfg3 = dict(real, _class_name="EchoUNet3DConditionModel", mid_block_type="UNetMidBlock3DCrossAttn",
                    down_block_types=["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
                    up_block_types=["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3)
        den = EchoUNet3DConditionModel.from_config(cfg3, **infer_cfg.unet_additional_kwargs).state_dict()
        fl = FaceLocator(320, conditioning_channels=1, block_out_channels=(16, 32, 96, 256)).state_dict()
    rows = ["file\tname\tshape\tdtype"]
    groups = [("reference_unet.pth", ref),
              ("denoising_unet.pth", {k: v for k, v in den.items() if ".motion_modules." not in k}),
              ("motion_module.pth", {k: v for k, v in den.items() if ".motion_modules." in k}),
              ("face_locator.pth", fl)]
    for fname, sd in groups:
        for k, v in sd.items():
            rows.append(f"{fname}\t{k}\t{'x'.join(str(d) for d in v.shape)}\t{v.dtype}")
    path.write_text("\n".join(rows) + "\n")
    print(path, {f: len(sd) for f, sd in groups})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cases", nargs="*", default=list(CASES))
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--sd15-keys", action="store_true", help="write echomimic_sd15_keys.tsv instead of cases")
    args = ap.parse_args()
    if not Path("src/pipelines/pipeline_echo_mimic.py").exists():
        sys.exit("run from the EchoMimic checkout (it reads configs/inference/inference_v2.yaml)")
    if args.sd15_keys:
        write_sd15_keys(args.out / "echomimic_sd15_keys.tsv")
        return
    for name in args.cases:
        make_case(name, args.out)


if __name__ == "__main__":
    main()
