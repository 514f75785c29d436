"""GPU memory of a render, estimated on the meta device (no GPU, no weights, seconds on a CPU).

What a render holds (weights, the video's and a clip's conditioning, torch-fast's static copies) is measured from
the tensors the real code makes; the transient peak of one guided step and of one VAE decode call is the largest
sum of live tensors while they run, with attention counted as a fused kernel does it (its output only, never the
L x L score matrix), as flash/cuDNN attention and the Triton kernel run on a GPU. Not counted: the CUDA context,
cuBLAS/cuDNN workspaces and the caching allocator's fragmentation (typically some hundreds of MB more).

    PYTHONPATH=. python3 bench/memory_estimate.py [--preset hallo-sd15] [--dtype fp16] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from emo.config import PRESETS, RunConfig
from emo.geometry import Geometry
from emo.models.hallo import HalloNet
from emo.models.vae import VAE
from emo.runtime.torch_fast_backend import TorchFastBackend
from emo.sampling.conditioning import StepSchedule
from emo.sampling.ddim import DDIM
from emo.sampling.latents import decode_frames
from emo.sampling.torch_model import guided_step, prepare_clip, prepare_video

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
GIB = 2 ** 30


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensors created inside the mode that are still alive, and their peak."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and not t._is_view():
                n = t.untyped_storage().nbytes()
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, n)
        return out

    def _free(self, n: int) -> None:
        self.live -= n


@contextmanager
def fused_attention() -> Iterator[None]:
    """Attention as a fused kernel allocates it: the output alone (the meta device would build the scores)."""
    plain = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = lambda q, k, v, *a, **kw: q.new_empty(*q.shape[:-1], v.shape[-1])
    try:
        yield
    finally:
        F.scaled_dot_product_attention = plain


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _transient(fn, *args) -> int:
    mode = LiveBytes()
    with torch.no_grad(), fused_attention(), mode:
        fn(*args)
    return mode.peak


def estimate(preset: str, dtype: torch.dtype, run: RunConfig) -> dict:
    cfg = PRESETS[preset].model
    meta = torch.device("meta")
    with meta:
        net, vae = HalloNet(cfg).to(dtype).eval(), VAE(cfg.vae).to(dtype).eval()
    geo = Geometry.of(cfg, run.size)
    f, n, size = run.frames, run.motion_frames, run.size

    def empty(*shape: int) -> torch.Tensor:
        return torch.empty(shape, device=meta, dtype=dtype)

    with torch.no_grad():
        masks = [empty(3, geo.tokens(k)) for k in range(geo.levels)]
        video = prepare_video(net, vae, cfg, empty(3, size, size), empty(cfg.imageproj.embedding_dim),
                              empty(3, size, size), masks, n)
        tokens = empty(f, cfg.audioproj.context_tokens, cfg.audioproj.output_dim)
        clip = prepare_clip(net, vae, cfg, video, empty(n, 3, size, size), tokens)
    video_bytes = _bytes(video.feed().values())
    clip_bytes = _bytes(clip.own_feed().values())
    entries = _bytes(t for kv in video.ref_kv for t in kv)
    latents = empty(1, cfg.vae.latent_channels, f, geo.latent, geo.latent)
    steps = StepSchedule(DDIM(cfg.scheduler, run.steps).timesteps, run, meta, dtype)
    step_peak = _transient(guided_step, net.denoising_unet, clip, steps.inputs(latents, 0))
    decode_batch = TorchFastBackend.decode_batch
    decode_peak = _transient(decode_frames, vae, latents[:, :, :decode_batch], cfg.vae.scaling_factor, decode_batch)
    weights = _bytes(p for m in (net, vae) for p in m.parameters())
    held = weights + video_bytes + clip_bytes
    static = video_bytes + clip_bytes  # torch-fast's static copy of the step's inputs
    return {
        "preset": preset, "dtype": str(dtype).removeprefix("torch."),
        "run": {"size": size, "frames": f, "motion_frames": n},
        "weights_bytes": weights,
        "video_conditioning_bytes": video_bytes,
        "reference_entries_bytes": entries,
        "clip_conditioning_bytes": clip_bytes,
        "per_frame_reference_copies_bytes": entries // 2 * f,  # what keeping an entry per cond frame would hold
        "step_transient_peak_bytes": step_peak,
        "decode_transient_peak_bytes": decode_peak,
        "decode_batch": decode_batch,
        # eager: one step or one decode at a time on top of what is held
        "estimated_peak_torch_bytes": held + max(step_peak, decode_peak),
        # torch-fast: + static copies, + the graph pool (a step's activations, kept), + a decode on the side stream
        # running while the next clip's steps replay
        "estimated_peak_torch_fast_bytes": held + static + step_peak + decode_peak,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="hallo-sd15", choices=sorted(PRESETS))
    p.add_argument("--dtype", default="fp16", choices=sorted(DTYPES))
    p.add_argument("--size", type=int)
    p.add_argument("--frames", type=int)
    p.add_argument("--motion-frames", type=int)
    p.add_argument("--out", help="write the estimate as JSON here too")
    args = p.parse_args(argv)
    base = PRESETS[args.preset].run
    run = RunConfig(frames=args.frames or base.frames, size=args.size or base.size,
                    motion_frames=base.motion_frames if args.motion_frames is None else args.motion_frames)
    result = estimate(args.preset, DTYPES[args.dtype], run)
    for k, v in result.items():
        print(f"{k:36s} {v / GIB:8.3f} GiB" if k.endswith("_bytes") else f"{k:36s} {v}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
