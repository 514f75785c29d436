"""torch-fast: the eager model with the work the reference repeats taken out, for CUDA in fp16/bf16.

- reference K/V of every denoiser self-attention layer: once per video (the two entries and a per-frame entry
  index, never a per-frame copy), motion features from the n motion frames only;
- the guided denoising step (both CFG halves in one batch) captured in a CUDA graph per shape and replayed for
  every step of every clip and video: its inputs live in static buffers, the conditioning copied in when another
  video or clip comes, the timestep, guidance scale and motion scale copied in before every replay, so a new
  setting never captures again. All graphs share one memory pool and the cache holds `max_graphs` of them;
- fused Triton kernels (emo.kernels), when asked for (`kernels=`), switched on for its calls only. None is on by
  default: on a GPU they measured slower than cuDNN (docs/performance.md);
- on CUDA, a clip's VAE decode split: the n frames the next clip needs as motion frames decoded at once, the
  others on a side stream while the next clip is denoised, copied to pinned host memory there without blocking
  (`pipelined`; the renderer yields one clip late, and waits only for that clip's copy).

Without CUDA (tests) the same static-buffer path runs eagerly, so its bookkeeping is checked on any machine.
"""
from __future__ import annotations

import torch

from ..checkpoints.model_dir import Models
from ..kernels import registry
from ..sampling.conditioning import ClipConditioning, StepInputs
from ..sampling.latents import decode_frames
from ..sampling.torch_model import guided_step
from .backend import DecodedClip, TorchBackend, decoded_now
from .static_step import BoundStep, StaticStep, StepCache


class TorchFastBackend(TorchBackend):
    name = "torch-fast"
    decode_batch = 8  # fp16 frames a VAE decode call: fewer launches, more memory

    def __init__(self, models: Models, device: str | torch.device = "cuda", dtype: str | torch.dtype = "fp16",
                 cuda_graphs: bool | None = None, kernels: tuple[str, ...] = (),
                 overlap_decode: bool | None = None, decode_batch: int | None = None, max_graphs: int = 2,
                 channels_last: bool = False):
        super().__init__(models, device, dtype, channels_last)
        on_cuda = self.device.type == "cuda"
        if cuda_graphs and not on_cuda:
            raise ValueError("CUDA graphs need a CUDA device")
        self.cuda_graphs = on_cuda if cuda_graphs is None else cuda_graphs
        self.kernels = frozenset(kernels)
        self.decode_batch = decode_batch or self.decode_batch
        # static steps by shape; two warm-up runs before a capture (cuDNN autotuning, allocator state)
        self.step_cache = StepCache(max_graphs, self.device, self.cuda_graphs, warmups=2)
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
    def decode_split(self, latents: torch.Tensor, tail: int) -> DecodedClip:
        if not self.pipelined or not 0 < tail < latents.shape[2]:
            return decoded_now(self.decode(latents), tail)
        f, scale, vae = latents.shape[2], self.cfg.vae.scaling_factor, self.models.vae
        main, side = torch.cuda.current_stream(self.device), self._decode_stream
        with registry.using(self.kernels):
            last = decode_frames(vae, latents[:, :, f - tail:], scale, self.decode_batch)  # needed next, at once
            side.wait_stream(main)  # latents and `last` are ready for the side stream
            with torch.cuda.stream(side):
                head = decode_frames(vae, latents[:, :, :f - tail], scale, self.decode_batch)
                frames = torch.cat([head, last]).permute(0, 2, 3, 1).float().contiguous()  # f c h w -> f h w c
                host = torch.empty(frames.shape, dtype=torch.float32, pin_memory=True)
                host.copy_(frames, non_blocking=True)
                copied = torch.cuda.Event()
                copied.record(side)
        latents.record_stream(side)  # not reused by the main stream's allocations before the side stream is done
        last.record_stream(side)

        def frames_of() -> torch.Tensor:
            copied.synchronize()  # this clip's frames only; the next clip's work stays queued
            return host

        return last, frames_of

    @property
    def captures(self) -> int:
        """Static steps built (CUDA graph captures on a GPU): one per new shape, none per setting."""
        return self.step_cache.captures

    def _bind(self, static: StaticStep) -> BoundStep:
        """The guided step of the modules, reading its inputs from the static buffers."""
        def run() -> torch.Tensor:
            with registry.using(self.kernels):
                return guided_step(self.models.net.denoising_unet, static.clip, static.inputs)

        return BoundStep(run)

    @torch.no_grad()
    def _guided_step(self, clip: ClipConditioning, inputs: StepInputs) -> torch.Tensor:
        return self.step_cache.run(clip, inputs, self._bind)
