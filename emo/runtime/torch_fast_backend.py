"""torch-fast: the eager model with the work the reference repeats taken out, for CUDA in fp16/bf16.

- reference K/V of every denoiser self-attention layer: once per video (TorchBackend.prepare_video already does
  this; Hallo recomputes the ReferenceNet every clip), motion features from the n motion frames only;
- per-clip constants (face feature, masks, tokens, per-frame reference K/V, motion features, audio tokens) copied
  once per clip into static buffers;
- the guided denoising step (both CFG halves in one batch) captured in a CUDA graph per shape and replayed for
  every step of every clip;
- fused Triton kernels (emo.kernels) switched on for its calls only;
- on CUDA, a clip's VAE decode split: the n frames the next clip needs as motion frames decoded at once, the
  others on a side stream while the next clip is denoised (`pipelined`; the renderer then yields one clip late).

Without CUDA (tests) the same static-buffer path runs eagerly, so its bookkeeping is checked on any machine.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from ..config import RunConfig
from ..kernels import registry
from ..sampling.clip import ClipConditioning, VideoConditioning, decode_frames, guided_prediction
from .backend import TorchBackend, decode_split
from .models import Models


def _tensors(clip: ClipConditioning) -> list[torch.Tensor]:
    """The tensors the denoiser reads, in a fixed order."""
    v = clip.video
    return [v.image_tokens, v.face_feature, *v.masks, *(t for kv in clip.ref_kv for t in kv), clip.motion_feats,
            clip.audio_tokens]


def _clone(clip: ClipConditioning) -> ClipConditioning:
    v = clip.video
    video = VideoConditioning(v.image_tokens.clone(), v.face_feature.clone(), [m.clone() for m in v.masks], [])
    return ClipConditioning(video, [(k.clone(), w.clone()) for k, w in clip.ref_kv], clip.motion_feats.clone(),
                            clip.audio_tokens.clone())


@dataclass
class _Step:
    """Static buffers (and, on CUDA, the captured graph) of the guided step for one shape and setting."""

    clip: ClipConditioning  # static copies
    latents: torch.Tensor
    t: torch.Tensor
    motion_scale: torch.Tensor
    guidance: float
    graph: "torch.cuda.CUDAGraph | None" = None
    out: torch.Tensor | None = None
    bound: "weakref.ref | None" = None  # the clip whose tensors are in the buffers

    def bind(self, clip: ClipConditioning) -> None:
        if self.bound is None or self.bound() is not clip:
            for dst, src in zip(_tensors(self.clip), _tensors(clip)):
                dst.copy_(src)
            self.bound = weakref.ref(clip)


class TorchFastBackend(TorchBackend):
    name = "torch-fast"

    def __init__(self, models: Models, device: str | torch.device = "cuda", dtype: str | torch.dtype = "fp16",
                 cuda_graphs: bool | None = None, kernels: tuple[str, ...] = registry.KERNELS,
                 overlap_decode: bool | None = None, decode_batch: int = 8):
        super().__init__(models, device, dtype)
        on_cuda = self.device.type == "cuda"
        if cuda_graphs and not on_cuda:
            raise ValueError("CUDA graphs need a CUDA device")
        self.cuda_graphs = on_cuda if cuda_graphs is None else cuda_graphs
        self.kernels = frozenset(kernels)
        self.decode_batch = decode_batch  # fp16 frames a VAE decode call: fewer launches, more memory
        self._steps: dict[tuple, _Step] = {}
        self.pipelined = on_cuda if overlap_decode is None else overlap_decode
        if self.pipelined and not on_cuda:
            raise ValueError("overlapped decoding needs a CUDA device")
        self._decode_stream = torch.cuda.Stream(self.device) if self.pipelined else None

    def prepare_video(self, portrait, motion_frames):
        with registry.using(self.kernels):
            return super().prepare_video(portrait, motion_frames)

    def prepare_clip(self, video, motion_pixels, windows):
        with registry.using(self.kernels):
            return super().prepare_clip(video, motion_pixels, windows)

    def decode(self, latents):
        with registry.using(self.kernels):
            return super().decode(latents)

    @torch.no_grad()
    def decode_split(self, latents: torch.Tensor, tail: int):
        if not self.pipelined or not 0 < tail < latents.shape[2]:
            return decode_split(self, latents, tail)
        f, scale, vae = latents.shape[2], self.cfg.vae.scaling_factor, self.models.vae
        main, side = torch.cuda.current_stream(self.device), self._decode_stream
        with registry.using(self.kernels):
            last = decode_frames(vae, latents[:, :, f - tail:], scale, self.decode_batch).float()  # needed next
            side.wait_stream(main)  # latents and `last` are ready for the side stream
            with torch.cuda.stream(side):
                head = decode_frames(vae, latents[:, :, :f - tail], scale, self.decode_batch).float()
        latents.record_stream(side)  # not reused by the main stream's allocations before the side stream is done
        last.record_stream(side)

        def frames() -> torch.Tensor:
            with torch.cuda.stream(side):  # joins and copies on the side stream: the main one keeps denoising
                return torch.cat([head, last]).cpu()

        return last, frames

    def _call(self, step: _Step) -> torch.Tensor:
        with registry.using(self.kernels):
            return guided_prediction(self.models.net, step.clip, step.latents, step.t, step.guidance,
                                     step.motion_scale)

    @torch.no_grad()
    def _new_step(self, clip: ClipConditioning, latents: torch.Tensor, run: RunConfig) -> _Step:
        step = _Step(_clone(clip), latents.clone(), torch.zeros((), dtype=torch.long, device=self.device),
                     torch.tensor(run.motion_scale, dtype=self.dtype, device=self.device), run.guidance_scale)
        step.bound = weakref.ref(clip)
        if self.cuda_graphs:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up: kernel autotuning and allocator state before capture
                    self._call(step)
            torch.cuda.current_stream(self.device).wait_stream(side)
            step.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(step.graph):
                step.out = self._call(step)
        return step

    @torch.no_grad()
    def predict(self, clip: ClipConditioning, latents: torch.Tensor, t: int, run: RunConfig) -> torch.Tensor:
        key = (tuple(latents.shape), clip.motion_feats.shape[1], run.guidance_scale, run.motion_scale)
        step = self._steps.get(key)
        if step is None:
            step = self._steps[key] = self._new_step(clip, latents, run)
        step.bind(clip)
        step.latents.copy_(latents)
        step.t.fill_(t)
        if step.graph is None:
            return self._call(step)
        step.graph.replay()
        return step.out.clone()  # the graph overwrites its output on the next replay
