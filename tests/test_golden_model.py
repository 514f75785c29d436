"""The model reproduces the public Hallo code's outputs (golden cases) within the golden README's tolerances."""
from __future__ import annotations

import pytest
import torch

from emo.checkpoints.hallo_net import load_hallo_net
from emo.config import ModelConfig, RunConfig
from emo.models.vae import VAE
from emo.sampling.clip import decode_frames, denoise, denoiser_output, prepare_clip, prepare_video

from .golden import GOLDEN_DIR, cases, load_case

CASES = cases("hallo_tiny")


def test_golden_dir_has_cases():
    assert CASES, f"no hallo_tiny golden case in {GOLDEN_DIR}"


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


@pytest.fixture(scope="module", params=CASES, ids=[p.name for p in CASES])
def case(request):
    meta, t = load_case(request.param)
    cfg = ModelConfig.from_hallo(meta)
    run = RunConfig.from_hallo(meta)
    net = load_hallo_net({k[4:]: v for k, v in t.items() if k.startswith("net.")}, cfg)
    vae = VAE(cfg.vae).eval()
    vae.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("vae.")})
    masks = [torch.cat([t[f"in.{m}_mask.{i}"] for m in ("full", "face", "lip")]) for i in range(4)]
    ref_image = t["in.ref_image"][0]  # (1+n, 3, H, W)
    with torch.no_grad():
        audio_tokens = net.audioproj(t["in.audio_feats"][None])
        video = prepare_video(net, vae, cfg, ref_image[0], t["in.face_emb"][0], t["in.face_region"][0], masks,
                              run.motion_frames)
        clip = prepare_clip(net, vae, cfg, video, ref_image[1:], audio_tokens[0])
    return dict(meta=meta, t=t, cfg=cfg, run=run, net=net, vae=vae, clip=clip, audio_tokens=audio_tokens)


def test_run_config_matches_case(case):
    run, r, t = case["run"], case["meta"]["run"], case["t"]
    assert t["in.ref_image"].shape[1] == 1 + run.motion_frames
    assert t["out.init_latents"].shape[2] == run.frames == r["frames"]
    assert t["out.timesteps"].shape[0] == run.steps == r["denoiser_calls"]


def test_audio_tokens(case):
    assert _max_err(case["audio_tokens"], case["t"]["out.audio_tokens"]) <= 1e-5


def test_timesteps(case):
    from emo.sampling.ddim import DDIM

    sched = DDIM(case["cfg"].scheduler, case["run"].steps)
    assert torch.equal(sched.timesteps.float(), case["t"]["out.timesteps"])


def test_step0_model_output(case):
    t, run = case["t"], case["run"]
    with torch.no_grad():
        out = denoiser_output(case["net"], case["clip"], t["out.step0_model_input"],
                              t["out.step0_timestep"][0].long(), torch.tensor(run.motion_scale))
    assert _max_err(out, t["out.step0_model_output"]) <= 5e-5


def test_final_latents_and_video(case):
    t, cfg, run = case["t"], case["cfg"], case["run"]
    with torch.no_grad():
        latents = denoise(case["net"], cfg, run, case["clip"], t["out.init_latents"])
        frames = decode_frames(case["vae"], latents, cfg.vae.scaling_factor)
    assert _max_err(latents, t["out.final_latents"]) <= 2e-4
    video = frames.transpose(0, 1)[None]  # f c h w -> 1 c f h w
    assert _max_err(video, t["out.video"]) <= 2e-4
