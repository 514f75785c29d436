"""One contract for every backend: the same prepared inputs through the protocol (audio_features, prepare_video,
prepare_clip, steps of every plan the backend runs, decode_split) give what eager torch gives, each backend within
its own tolerance.

torch-fast runs its static-buffer step on the CPU in fp32; onnxruntime runs the fp32 export of the same random
weights; tensorrt runs that export's plans, where a TensorRT runtime and a GPU are present.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from emo.config import ModelConfig, RunConfig
from emo.export.verify import FP16_ROUNDED
from emo.io_spec import component_specs, default_ranges
from emo.media.audio import load_audio
from emo.preprocess.audio_features import compute_audio_features
from emo.runtime.backend import Backend
from emo.runtime.factory import RendererSpec, build_backend
from emo.runtime.renderer import Prepared, Renderer
from emo.sampling.conditioning import StepSchedule
from emo.sampling.ddim import DDIM
from emo.sampling.step_plan import CONDITIONAL, GUIDED, StepPlan

RUN = RunConfig(frames=4, motion_frames=2, steps=5, size=64, fps=25)
# guided, conditional-only, and deep features stored by a guided step, reused by a guided and a cond-only one
PLANS = [GUIDED, CONDITIONAL, StepPlan(True, "store"), StepPlan(True, "reuse"), StepPlan(False, "reuse")]
CACHED = {"torch", "torch-fast"}  # the backends with deep-feature reuse; the others run the plans without it
SECONDS = 0.44  # 11 frames of audio: three clips of 4


@dataclass(frozen=True)
class Tolerance:
    """The largest max |got - torch's| / max(1, max |torch's|) allowed: `float32` for outputs computed in float32
    throughout, `records` for those made from the ReferenceNet's float16-rounded records (reference K/V, motion
    features) and the steps that read them: a float32 difference that moves a record across a float16 rounding
    boundary moves it by a whole float16 ulp (2^-10), which the layers after it amplify."""

    float32: float
    records: float
    why: str


TOLERANCES = {
    "torch": Tolerance(0.0, 0.0, "the reference itself: deterministic on the CPU"),
    "torch-fast": Tolerance(1e-6, 2e-6, "the same modules on static copies of the inputs (test_torch_fast's bound); "
                                        "a step reusing deep features measured 1.0e-6 (float32 reordering)"),
    "onnxruntime": Tolerance(1e-4, 1e-2, "fp32 graphs: test_export's bound per graph; a few float16 ulps of the "
                                         "records (2.3e-3 measured on the motion features)"),
    "tensorrt": Tolerance(2e-2, 2e-2, "TF32-class matmuls on the GPU (test_engine_gpu's bound)"),
}


def _from_records(cfg: ModelConfig) -> set[str]:
    """IO-spec names of the outputs made from the float16-rounded records (as emo-export's checks count them)."""
    specs = component_specs(cfg, default_ranges(cfg))
    return {t.name for component in FP16_ROUNDED for t in specs[component].outputs}


def _spec(name: str, request: pytest.FixtureRequest) -> RendererSpec:
    """How the factory builds each backend from the same weights: the tiny preset's seed 0, or its export."""
    if name == "onnxruntime":
        return RendererSpec(engine_dir=str(request.getfixturevalue("tiny_export")), backend=name, device="cpu")
    if name == "tensorrt":
        return RendererSpec(engine_dir=str(request.getfixturevalue("tiny_plans")), backend=name, device="cuda")
    return RendererSpec(random="tiny", backend=name, device="cpu", dtype="fp32", fast_on_cpu=True,
                        kernels=() if name == "torch-fast" else None)


@dataclass
class Outputs:
    """What one backend makes of the inputs, on the host in float64 (IO-spec names for the conditioning)."""

    audio_features: torch.Tensor
    video: dict[str, torch.Tensor]
    clip: dict[str, torch.Tensor]
    steps: list[torch.Tensor]
    tail: torch.Tensor
    frames: torch.Tensor


def _host(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().double() if t.is_floating_point() else t.detach().cpu()


def _plans(backend: Backend) -> list[StepPlan]:
    return PLANS if backend.name in CACHED else PLANS[:2]


def _run_protocol(backend: Backend, prepared: Prepared, samples: np.ndarray, latents: torch.Tensor) -> Outputs:
    """The inputs through each call of the protocol, in the order the renderer makes them."""
    feats, _ = compute_audio_features(backend.audio_features, samples, RUN.fps, RUN.frames, RUN.sample_rate)
    n = RUN.motion_frames
    video = backend.prepare_video(prepared.portrait, n)
    motion = prepared.portrait.pixels.to(backend.device, backend.dtype).expand(n, -1, -1, -1)
    clip = backend.prepare_clip(video, motion, prepared.windows[:RUN.frames])
    schedule = StepSchedule(DDIM(backend.cfg.scheduler, RUN.steps).timesteps, RUN, backend.device, backend.dtype)
    x = latents.to(backend.device, backend.dtype)
    steps = []
    for i, plan in enumerate(_plans(backend)):
        out = backend.step(clip, schedule.inputs(x, i, plan.halves), plan)
        assert (out.shape, out.device, out.dtype) == (latents.shape, x.device, backend.dtype)
        steps.append(_host(out))
    tail, frames_of = backend.decode_split(x, n)
    frames = frames_of()
    assert tail.shape == (n, 3, RUN.size, RUN.size) and tail.device == x.device
    assert frames.shape == (RUN.frames, RUN.size, RUN.size, 3) and frames.dtype == torch.float32
    assert frames.device.type == "cpu" and torch.equal(tail.permute(0, 2, 3, 1).float().cpu(), frames[-n:])
    return Outputs(_host(feats), {k: _host(t) for k, t in video.feed().items()},
                   {k: _host(t) for k, t in clip.own_feed().items()}, steps, _host(tail), _host(frames))


@pytest.fixture(scope="module")
def inputs(speech_media) -> tuple[Prepared, np.ndarray, torch.Tensor]:
    """(the prepared portrait and audio windows, the voice's 16 kHz samples, a first clip's initial latents)."""
    media = speech_media(SECONDS)
    renderer = Renderer.random(device="cpu")
    prepared = renderer.prepare(media / "face.png", media / "voice.wav", RUN)
    samples = load_audio(media / "voice.wav", RUN.sample_rate)
    latent = RUN.size // renderer.cfg.vae.downscale
    latents = torch.randn(1, renderer.cfg.vae.latent_channels, RUN.frames, latent, latent,
                          generator=torch.Generator().manual_seed(0))
    return prepared, samples, latents


@pytest.fixture(scope="module")
def reference(request, inputs) -> Outputs:
    return _run_protocol(build_backend(_spec("torch", request)), *inputs)


def _error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| in units of max(1, max |want|)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    return float((got.double() - want.double()).abs().max()) / max(1.0, float(want.double().abs().max()))


@pytest.mark.parametrize("name", list(TOLERANCES))
def test_backend_matches_torch_through_the_protocol(request, inputs, reference, name):
    backend = build_backend(_spec(name, request))
    assert backend.name == name and not backend.pipelined
    got = _run_protocol(backend, *inputs)
    assert set(got.video) == set(reference.video) and set(got.clip) == set(reference.clip)
    assert torch.equal(got.clip["ref_index"], reference.clip["ref_index"])
    conditioning = got.video | got.clip
    errors = {"audio_features": _error(got.audio_features, reference.audio_features),
              **{k: _error(t, (reference.video | reference.clip)[k]) for k, t in conditioning.items()},
              **{f"step {i}": _error(a, b) for i, (a, b) in enumerate(zip(got.steps, reference.steps, strict=False))},
              "decode tail": _error(got.tail, reference.tail), "decode frames": _error(got.frames, reference.frames)}
    records = _from_records(backend.cfg) | {f"step {i}" for i in range(RUN.steps)}
    tolerance = TOLERANCES[name]
    over = {k: f"{e:.2e}" for k, e in errors.items()
            if e > (tolerance.records if k in records else tolerance.float32)}
    assert not over, f"{name}: beyond {tolerance} for {over}"


@pytest.mark.parametrize("name", sorted(set(TOLERANCES) - CACHED))
def test_a_plan_the_backend_lacks_is_refused_in_one_line(request, name):
    backend = build_backend(_spec(name, request))
    with pytest.raises(ValueError, match=f"the {name} backend does not reuse deep features") as e:
        backend.step(None, None, StepPlan(cache="store"))
    assert "\n" not in str(e.value)

