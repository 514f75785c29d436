"""What the onnxruntime and tensorrt backends share: the whole backend protocol over one primitive, `call`.

A graph backend runs the components of a directory made ahead of time (an ONNX export directory or a TensorRT
plan directory), each called with a feed keyed by its IO spec's input names and answering with its outputs by
name. Everything else is written here once: the audio length check, the conditioning (its CFG halves assembled by
`emo.sampling.guidance`, as for the torch backends), the step, decoding. The conditioning is kept in the denoiser's
input dtypes and memory (`as_denoiser_input`), so a step converts nothing.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import torch

from ..io_spec import ComponentSpec, component_specs, kv_names
from ..manifest import EngineDirError, Manifest, check_audio_length
from ..models.transformer import RefKV
from ..preprocess.portrait import Portrait
from ..sampling.conditioning import ClipConditioning, StepInputs, VideoConditioning
from ..sampling.guidance import clip_conditioning, video_conditioning
from ..sampling.latents import decode_in_chunks
from ..sampling.step_plan import StepPlan, refuse_cache
from ..sampling.torch_model import check_halves
from .backend import DecodedClip, decoded_now

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                "int64": torch.int64, "int32": torch.int32}  # the IO spec's and binding plan's dtype names


def dtype_name(dtype: torch.dtype) -> str:
    """torch.float16 -> "float16" (the IO spec's and binding plan's names)."""
    return str(dtype).removeprefix("torch.")


class GraphBackend(ABC):
    """A backend over the components of `manifest`'s directory. A subclass sets `name`, `device` and `dtype`, and
    implements `call` and `input_dtype`; it may run the guided step its own way (`_guided_step`)."""

    pipelined = False  # decode_split returns finished frames
    captures: int | None = None
    name: str
    device: torch.device
    dtype: torch.dtype

    def __init__(self, directory: Path, manifest: Manifest):
        self.directory, self.manifest = directory, manifest
        self.cfg = manifest.model()
        self.precision = manifest.precision
        self.specs: dict[str, ComponentSpec] = component_specs(self.cfg, manifest.shape_ranges())

    def check_run(self, run) -> None:
        """Refuse, in one line and before any work, a clip length, motion-frame count or frame size outside the
        ranges the graphs were exported (or the plans built) for."""
        r = self.manifest.shape_ranges()
        kind, remedy = ("plans", "rebuild them with emo-build-engine --frames / --size") \
            if self.manifest.format == "tensorrt" else ("graphs", "re-export with emo-export --ranges")
        for what, value, (lo, _, hi), unit in (("clips of", run.frames, r.frames, " frames"),
                                               ("a first clip of", run.first_clip_frames, r.frames, " frames"),
                                               ("motion frames:", run.motion_frames, r.motion_frames, ""),
                                               ("frames of", run.size, r.size, " px")):
            if value is not None and not lo <= value <= hi:
                raise EngineDirError(f"{self.directory}: its {kind} take {what} {lo} to {hi}{unit}, not "
                                     f"{value}{unit}; use settings inside that range or {remedy}")

    @abstractmethod
    def call(self, component: str, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run one component: its IO spec's inputs by name (any dtype and memory: converted as it takes them) ->
        its outputs by name, as the component makes them."""

    @abstractmethod
    def input_dtype(self, component: str, name: str) -> torch.dtype:
        """The dtype in which `component` takes input `name`."""

    def as_denoiser_input(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """x as the denoiser takes input `name`: its dtype, on `device`, contiguous."""
        return x.to(self.device, self.input_dtype("denoiser", name)).contiguous()

    # the conditioning components (emo.sampling.guidance.ConditioningComponents)

    def imageproj(self, face_embedding: torch.Tensor) -> torch.Tensor:
        return self.call("imageproj", {"face_embedding": face_embedding})["image_tokens"]

    def face_locator(self, face_region: torch.Tensor) -> torch.Tensor:
        return self.call("face_locator", {"face_region": face_region})["face_feature"]

    def vae_encoder(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.call("vae_encoder", {"pixels": pixels})["latents"]

    def reference(self, ref_latent: torch.Tensor, ref_context: torch.Tensor) -> list[RefKV]:
        out = self.call("reference", {"ref_latent": ref_latent, "ref_context": ref_context})
        return [tuple(out[n] for n in kv_names(i)) for i in range(len(out) // 2)]

    def motion(self, motion_latents: torch.Tensor, motion_context: torch.Tensor) -> torch.Tensor:
        return self.call("motion", {"motion_latents": motion_latents,
                                    "motion_context": motion_context})["motion_features"]

    # the backend protocol (emo.runtime.backend.Backend)

    @torch.no_grad()
    def audio_features(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
        check_audio_length(self.manifest.shape_ranges(), self.specs["audio_encoder"].dims["samples"].max,
                           waveform.numel())
        out = self.call("audio_encoder", {"waveform": waveform.reshape(1, -1),
                                          "num_frames": torch.tensor([num_frames], dtype=torch.int64)})
        return out["audio_features"].float().cpu()

    @torch.no_grad()
    def prepare_video(self, portrait: Portrait, motion_frames: int) -> VideoConditioning:
        p = portrait
        video = video_conditioning(self, p.pixels, p.face_emb, p.face_region, p.masks, motion_frames)
        return video.converted(self.as_denoiser_input)

    @torch.no_grad()
    def prepare_clip(self, video: VideoConditioning, motion_pixels: torch.Tensor, windows: torch.Tensor
                     ) -> ClipConditioning:
        tokens = self.call("audioproj", {"windows": windows[None]})["audio_tokens"][0]  # (1, f, t, c) -> (f, t, c)
        return clip_conditioning(self, self.cfg, video, motion_pixels, tokens).converted(self.as_denoiser_input)

    def step(self, clip: ClipConditioning, inputs: StepInputs, plan: StepPlan) -> torch.Tensor:
        refuse_cache(plan, self.name)
        check_halves(inputs, plan)
        return self._guided_step(clip.halves(plan.halves), inputs)

    @torch.no_grad()
    def _guided_step(self, clip: ClipConditioning, inputs: StepInputs) -> torch.Tensor:
        """The denoiser graph: both CFG halves through the full UNet, combined (or the cond half alone, with a
        batch of 1: the graph's halves dimension)."""
        return self.call("denoiser", clip.feed() | inputs.feed())["noise_pred"].to(self.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return decode_in_chunks(lambda z: self.call("vae_decoder", {"latents": z})["frames"].float(), latents,
                                self.manifest.shape_ranges().decode_batch)

    def decode_split(self, latents: torch.Tensor, tail: int) -> DecodedClip:
        return decoded_now(self.decode(latents), tail)
