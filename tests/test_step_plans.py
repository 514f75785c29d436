"""Step plans do what they say on the eager model: conditional-only is the cond half of a guided step, deep-feature
reuse with the features of the same inputs is the full step, and the default settings plan exactly today's steps."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from emo.checkpoints.model_dir import random_models
from emo.config import PRESETS, RunConfig
from emo.errors import InputError
from emo.export.inputs import example_inputs
from emo.io_spec import component_specs, trace_values
from emo.sampling.conditioning import ClipConditioning, StepInputs
from emo.sampling.cost import reuse_fraction, run_evaluations
from emo.sampling.step_plan import CONDITIONAL, GUIDED, StepPlan, plans
from emo.sampling.torch_model import denoise_halves, guided_step, planned_step

RUN = RunConfig(steps=8)


@pytest.fixture(scope="module")
def step():
    models = random_models()
    cfg = models.cfg
    spec = component_specs(cfg, PRESETS["tiny"].ranges)["denoiser"]
    feed = example_inputs(spec, trace_values(cfg, PRESETS["tiny"].ranges))
    clip = ClipConditioning.from_feed(feed, len(cfg.unet.block_out_channels),
                                      len(models.net.denoising_unet.spatial_transformers()))
    inputs = StepInputs(feed["sample"], feed["timestep"], feed["guidance_scale"], feed["motion_scale"])
    return models.net.denoising_unet, clip, inputs


def _cond(inputs: StepInputs) -> StepInputs:
    return dataclasses.replace(inputs, sample=inputs.sample[1:])


@torch.no_grad()
def test_conditional_only_is_the_cond_half_of_a_guided_step(step):
    denoiser, clip, inputs = step
    both, _ = denoise_halves(denoiser, clip, inputs.sample, inputs.timestep, inputs.motion_scale)
    cond, deep = planned_step(denoiser, clip, _cond(inputs), CONDITIONAL, None)
    assert deep is None and cond.shape == both[1:].shape
    assert torch.allclose(cond, both[1:], atol=1e-5, rtol=0)  # batch 1 vs 2: float32 summation order only
    assert not torch.allclose(cond, guided_step(denoiser, clip, inputs), atol=1e-3)  # guidance does change it


@torch.no_grad()
@pytest.mark.parametrize("levels", [1, 2])
def test_reuse_of_the_same_inputs_features_is_the_full_step(step, levels):
    denoiser, clip, inputs = step
    full = guided_step(denoiser, clip, inputs)
    stored, deep = planned_step(denoiser, clip, inputs, StepPlan(True, "store", levels), None)
    assert torch.equal(stored, full) and deep is not None
    reused, kept = planned_step(denoiser, clip, inputs, StepPlan(True, "reuse", levels), deep)
    assert torch.equal(reused, full) and kept is deep
    # a cond-only step reads the cond rows of a guided step's features
    cond, _ = planned_step(denoiser, clip, _cond(inputs), StepPlan(False, "reuse", levels), deep)
    plain, _ = planned_step(denoiser, clip, _cond(inputs), CONDITIONAL, None)
    assert torch.allclose(cond, plain, atol=1e-5, rtol=0)  # features of a batch of 2: summation order only
    # features of other latents do change the step: the outer levels alone are not the UNet
    other, _ = planned_step(denoiser, clip, inputs, StepPlan(True, "reuse", levels), deep * 0.5)
    assert not torch.allclose(other, full, atol=1e-4)


def test_reuse_without_stored_features_is_refused(step):
    denoiser, clip, inputs = step
    with pytest.raises(ValueError, match="needs a storing step"):
        planned_step(denoiser, clip, inputs, StepPlan(True, "reuse"), None)
    with pytest.raises(ValueError, match="CFG halves"):
        planned_step(denoiser, clip, inputs, CONDITIONAL, None)


def test_default_settings_plan_every_step_guided_and_uncached():
    assert plans(RUN) == [GUIDED] * 8
    assert plans(dataclasses.replace(RUN, guidance_interval=(0.0, 1.0), cache_interval=1)) == [GUIDED] * 8


def test_guidance_interval_and_scale_one():
    run = dataclasses.replace(RUN, guidance_interval=(0.25, 0.75))
    assert [p.guided for p in plans(run)] == [False, False, True, True, True, True, False, False]
    assert not any(p.guided for p in plans(dataclasses.replace(RUN, guidance_scale=1.0)))


def test_cache_interval_stores_every_n_steps_and_never_reuses_fewer_halves():
    run = dataclasses.replace(RUN, cache_interval=3)
    assert [p.cache for p in plans(run)] == ["store", "reuse", "reuse"] * 2 + ["store", "reuse"]
    # cond-only steps first, then guided ones: the first guided step must store afresh
    mixed = plans(dataclasses.replace(RUN, cache_interval=4, guidance_interval=(0.5, 1.0)))
    assert [(p.guided, p.cache) for p in mixed] == [
        (False, "store"), (False, "reuse"), (False, "reuse"), (False, "reuse"),
        (True, "store"), (True, "reuse"), (True, "reuse"), (True, "reuse")]
    mixed = plans(dataclasses.replace(RUN, cache_interval=4, guidance_interval=(0.0, 0.25)))
    assert [(p.guided, p.cache) for p in mixed][:4] == [
        (True, "store"), (True, "reuse"), (False, "reuse"), (False, "reuse")]


def test_evaluations_per_frame():
    cfg = PRESETS["hallo-sd15"].model
    quality = RunConfig(steps=40)
    assert run_evaluations(cfg, quality, [16, 16]) / 32 == 80
    assert run_evaluations(cfg, dataclasses.replace(quality, guidance_scale=1.0), [16]) / 16 == 40
    f = reuse_fraction(cfg, 64, 16, 2, 1)
    assert 0.2 < f < 0.8  # the outer level of SD1.5 at 512²: about half the FLOPs
    cached = dataclasses.replace(quality, cache_interval=2)
    assert run_evaluations(cfg, cached, [16]) / 16 == pytest.approx(20 * 2 + 20 * 2 * f)


@pytest.mark.parametrize("bad, message", [
    (dict(sampler="euler"), "sampler must be one of"),
    (dict(guidance_interval=(0.6, 0.4)), "start must be <= its end"),
    (dict(guidance_interval=(0.0, 1.5)), "guidance interval end"),
    (dict(cache_interval=0), "cache interval"),
    (dict(cache_interval=9), "cache interval"),
    (dict(first_clip_frames=0), "first clip frames"),
    (dict(first_clip_frames=17), "first clip frames"),
    (dict(first_clip_frames=1, motion_frames=2), "first clip frames must be >= motion frames"),
    (dict(guidance_scale=1e308), "guidance scale"),
])
def test_bad_knobs_are_refused_in_one_line(bad, message):
    with pytest.raises(InputError, match=message) as e:
        dataclasses.replace(RUN, **bad).validate()
    assert "\n" not in str(e.value)
