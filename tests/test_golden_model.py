"""The model reproduces the public Hallo code's outputs (golden cases) within the golden README's tolerances."""
from __future__ import annotations

import pytest
import torch

from emo.config import ModelConfig, RunConfig
from emo.golden.cases import REPO_GOLDEN_DIR, TOLERANCES, cases, load_case
from emo.golden.run import golden_net, golden_vae, max_err, run_case

CASES = cases("model")


def test_repository_has_model_cases():
    assert cases("model", labels=("repo",)), f"no model golden case in {REPO_GOLDEN_DIR}"


@pytest.fixture(scope="module", params=CASES, ids=[c.id for c in CASES])
def case(request):
    meta, t = load_case(request.param)
    cfg = ModelConfig.from_hallo(meta)
    run = RunConfig.from_hallo(meta)
    net, vae = golden_net(meta, t, cfg), golden_vae(meta, t, cfg.vae)
    return dict(meta=meta, t=t, cfg=cfg, run=run, out=run_case(net, vae, cfg, run, t))


def test_run_config_matches_case(case):
    run, r, t = case["run"], case["meta"]["run"], case["t"]
    assert t["in.ref_image"].shape[1] == 1 + run.motion_frames
    assert t["out.init_latents"].shape[2] == run.frames == r["frames"]
    assert t["out.timesteps"].shape[0] == run.steps == r["denoiser_calls"]


def test_timesteps(case):
    from emo.sampling.ddim import DDIM

    sched = DDIM(case["cfg"].scheduler, case["run"].steps)
    assert torch.equal(sched.timesteps.float(), case["t"]["out.timesteps"])


@pytest.mark.parametrize("output", list(TOLERANCES))
def test_output_matches_golden(case, output):
    assert max_err(case["out"][output], case["t"][f"out.{output}"]) <= TOLERANCES[output]
