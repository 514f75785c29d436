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
  (`pipelined`; the renderer yields one clip late, and waits only for that clip's copy);
- opt-in, a lighter step: `compile` (the step of each shape and plan through inductor, compiled_step.py), q/k/v of
  every self-attention in one GEMM (`fuse_qkv`, on with `compile`), and the denoiser's linear layers in FP8
  (`fp8`: scales from emo.calibration.linear_amax; refused where the GPU has no FP8 unless `fp8_emulate`). Their
  GPU speed has not been measured.

Without CUDA (tests) the same static-buffer path runs eagerly, so its bookkeeping is checked on any machine.
"""
from __future__ import annotations

import torch

from ..checkpoints.model_dir import Models
from ..errors import InputError
from ..kernels import registry
from ..models.attention import Attention
from ..sampling.conditioning import ClipConditioning, StepInputs
from ..sampling.latents import decode_frames
from ..sampling.step_plan import StepPlan
from ..sampling.torch_model import cached_step, check_halves, guided_step
from .backend import DecodedClip, TorchBackend, decoded_now, resolve_device
from .compiled_step import check_mode, compile_step
from .fp8_convert import Fp8Scales, convert_to_fp8
from .fp8_linear import fp8_refusal
from .static_step import BoundStep, StaticStep, StepCache


class TorchFastBackend(TorchBackend):
    name = "torch-fast"
    decode_batch = 8  # fp16 frames a VAE decode call: fewer launches, more memory

    def __init__(self, models: Models, device: str | torch.device = "cuda", dtype: str | torch.dtype = "fp16",
                 cuda_graphs: bool | None = None, kernels: tuple[str, ...] = (),
                 overlap_decode: bool | None = None, decode_batch: int | None = None, max_graphs: int = 4,
                 channels_last: bool = False, compile: str | None = None, fuse_qkv: bool | None = None,
                 fp8: Fp8Scales | None = None, fp8_emulate: bool = False):
        check_mode(compile)
        refusal = None if fp8 is None or fp8_emulate else fp8_refusal(resolve_device(device))
        if refusal:
            raise InputError(refusal)
        super().__init__(models, device, dtype, channels_last)
        on_cuda = self.device.type == "cuda"
        denoiser = self.models.net.denoising_unet
        self.fp8 = None if fp8 is None else convert_to_fp8(denoiser, fp8, emulate=fp8_emulate)  # in place
        self.compile = compile
        if compile is not None if fuse_qkv is None else fuse_qkv:
            for module in self.models.net.modules():
                if isinstance(module, Attention):
                    module.fuse_qkv()
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
        self._deep: dict[tuple, torch.Tensor] = {}  # DeepCache buffers by (frames, latent, dtype, motion frames)

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

    def _deep_buffer(self, static: StaticStep, kept: torch.Tensor | None = None) -> torch.Tensor:
        """The deep features of a shape's "store" steps, read by its "reuse" steps: one buffer for both halves
        ((2 f, c, h, w), a conditional-only step writing and reading the last f rows), so that every captured step
        of the shape reads and writes the same addresses. Made by the first store (from its features `kept`)."""
        s = static.inputs.sample  # (halves, 4, f, h, w)
        key = (tuple(s.shape[2:]), s.dtype, static.clip.motion_features.shape[1])
        if key not in self._deep:
            if kept is None:
                raise ValueError("a step reusing deep features needs a storing step before it in the clip")
            rows = kept.shape[0] // s.shape[0] * 2
            self._deep[key] = kept.new_zeros((rows, *kept.shape[1:]))
        return self._deep[key]

    def _bind(self, static: StaticStep, plan: StepPlan) -> BoundStep:
        """The step of the modules as `plan` says, reading its inputs from the static buffers (and the shape's
        deep-feature buffer, for a cached plan). With `compile`, the model call of this shape and plan is compiled
        on its first run (the deep-feature bookkeeping stays outside it)."""
        denoiser = self.models.net.denoising_unet

        def model(deep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
            if plan.cache == "off":
                return guided_step(denoiser, static.clip, static.inputs), None
            return cached_step(denoiser, static.clip, static.inputs, plan.levels, deep)

        body = model if self.compile is None else compile_step(model, self.compile)

        def run() -> torch.Tensor:
            with registry.using(self.kernels):
                if plan.cache != "reuse":
                    out, kept = body(None)
                    if plan.cache == "store":
                        buffer = self._deep_buffer(static, kept)
                        buffer[buffer.shape[0] - kept.shape[0]:].copy_(kept)
                    return out
                return body(self._deep_buffer(static))[0]

        if self.compile == "reduce-overhead":  # inductor's own CUDA graphs: not captured again in torch-fast's
            return BoundStep(run, capturable=lambda stream: False)
        return BoundStep(run)

    @torch.no_grad()
    def step(self, clip: ClipConditioning, inputs: StepInputs, plan: StepPlan) -> torch.Tensor:
        check_halves(inputs, plan)
        return self.step_cache.run(clip.halves(plan.halves), inputs, lambda static: self._bind(static, plan),
                                   (plan.cache, plan.levels))
