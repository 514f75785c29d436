"""The denoiser's inputs, grouped by how often they change, with the names of the denoiser's IO spec.

- VideoConditioning: constant across the clips of a video (tokens, face feature, masks, reference K/V entries);
- ClipConditioning: constant across the steps of a clip (audio tokens, motion features, reference entry index);
- StepInputs: one denoising step (sample, timestep, guidance scale, motion scale).

The tensors with a CFG-halves batch dimension are [uncond, cond]; a conditional-only step reads their cond half
(`halves(1)`: views, made once per video and clip, so that a backend keeping static buffers sees the same objects
on every step).

Every backend consumes these three: the torch backends call the model with their fields, the graph backends feed
`feed()` (IO-spec name -> tensor) to the exported denoiser, and the export wrapper rebuilds them from its inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..config import RunConfig
from ..io_spec import kv_names, mask_name
from ..models.transformer import RefKV

Convert = Callable[[str, torch.Tensor], torch.Tensor]  # (IO-spec name, tensor) -> the tensor as a backend keeps it


@dataclass
class VideoConditioning:
    image_tokens: torch.Tensor  # (2, t, c) [uncond = imageproj(0), cond = imageproj(face embedding)]
    face_feature: torch.Tensor  # (2, c0, h, w) [zeros, face_locator(face region)]
    masks: list[torch.Tensor]  # mask_k: per level k (3, tok_k) full, face, lip
    ref_kv: list[RefKV]  # ref_k_i, ref_v_i: per self-attention layer i, the two reference entries (2, heads, l, d)
    _cond: "VideoConditioning | None" = field(default=None, repr=False, compare=False)

    def halves(self, n: int) -> "VideoConditioning":
        """Both halves (n = 2, itself) or the cond half alone (n = 1: views of the last row, made once)."""
        if n == 2:
            return self
        if n != 1:
            raise ValueError(f"a step runs 1 or 2 CFG halves (got {n})")
        if self._cond is None:
            self._cond = VideoConditioning(self.image_tokens[1:], self.face_feature[1:], self.masks, self.ref_kv)
        return self._cond

    def feed(self) -> dict[str, torch.Tensor]:
        kv = {name: t for i, pair in enumerate(self.ref_kv) for name, t in zip(kv_names(i), pair, strict=True)}
        return {"image_tokens": self.image_tokens, "face_feature": self.face_feature,
                **{mask_name(k): m for k, m in enumerate(self.masks)}, **kv}

    @classmethod
    def from_feed(cls, feed: dict[str, torch.Tensor], levels: int, layers: int) -> "VideoConditioning":
        """The inverse of `feed` for a model with `levels` mask levels and `layers` self-attention layers."""
        return cls(feed["image_tokens"], feed["face_feature"], [feed[mask_name(k)] for k in range(levels)],
                   [tuple(feed[n] for n in kv_names(i)) for i in range(layers)])

    def converted(self, convert: Convert) -> "VideoConditioning":
        """Every tensor through `convert`: a graph backend keeps them in its denoiser's input dtypes and memory,
        so that no step converts them again."""
        return VideoConditioning.from_feed({k: convert(k, t) for k, t in self.feed().items()}, len(self.masks),
                                           len(self.ref_kv))


@dataclass
class ClipConditioning:
    video: VideoConditioning
    audio_tokens: torch.Tensor  # (2, f, t, c) [zeros, audioproj(window)]
    motion_features: torch.Tensor  # (2, n, c, h_mid, w_mid)
    ref_index: torch.Tensor  # (f,) int64: the reference entry each cond frame reads
    _cond: "ClipConditioning | None" = field(default=None, repr=False, compare=False)

    def halves(self, n: int) -> "ClipConditioning":
        """Both halves (n = 2, itself) or the cond half alone (n = 1: views of the last row, made once). The
        reference entries stay both: the cond rows read them through ref_index."""
        if n == 2:
            return self
        video = self.video.halves(n)
        if self._cond is None:
            self._cond = ClipConditioning(video, self.audio_tokens[1:], self.motion_features[1:], self.ref_index)
        return self._cond

    def own_feed(self) -> dict[str, torch.Tensor]:
        """The clip's own inputs (not its video's), by IO-spec name."""
        return {"audio_tokens": self.audio_tokens, "motion_features": self.motion_features,
                "ref_index": self.ref_index}

    def feed(self) -> dict[str, torch.Tensor]:
        """Every denoiser input but the step's, by IO-spec name."""
        return self.video.feed() | self.own_feed()

    @classmethod
    def from_feed(cls, feed: dict[str, torch.Tensor], levels: int, layers: int) -> "ClipConditioning":
        """The inverse of `feed` for a model with `levels` mask levels and `layers` self-attention layers."""
        return cls(VideoConditioning.from_feed(feed, levels, layers), feed["audio_tokens"], feed["motion_features"],
                   feed["ref_index"])

    def converted(self, convert: Convert) -> "ClipConditioning":
        """The clip's own tensors through `convert` (its video's were converted once, with the video)."""
        return ClipConditioning(self.video, **{k: convert(k, t) for k, t in self.own_feed().items()})


@dataclass
class StepInputs:
    sample: torch.Tensor  # (halves, 4, f, h, w): the latents once per CFG half, [uncond, cond] or [cond]
    timestep: torch.Tensor  # (1,) float32
    guidance_scale: torch.Tensor  # (1,)
    motion_scale: torch.Tensor  # (3,) full / face / lip

    def feed(self) -> dict[str, torch.Tensor]:
        return {"sample": self.sample, "timestep": self.timestep, "guidance_scale": self.guidance_scale,
                "motion_scale": self.motion_scale}


class StepSchedule:
    """The step inputs of one run, made on the device once per video: the timesteps, guidance and motion scale
    are device tensors, so a step sends nothing from the host and waits for nothing (no per-step tensor
    creation, no host sync)."""

    def __init__(self, timesteps: torch.Tensor, run: RunConfig, device: torch.device, dtype: torch.dtype):
        self.timesteps = timesteps.to(device, torch.float32)  # (steps,)
        self.guidance_scale = torch.full((1,), run.guidance_scale, dtype=dtype, device=device)
        self.motion_scale = torch.tensor(run.motion_scale, dtype=dtype, device=device)

    def inputs(self, latents: torch.Tensor, i: int, halves: int = 2) -> StepInputs:
        """Step i for latents (1, 4, f, h, w), for both CFG halves or (halves = 1) the cond half alone."""
        sample = torch.cat([latents, latents]) if halves == 2 else latents
        return StepInputs(sample, self.timesteps[i:i + 1], self.guidance_scale, self.motion_scale)
