"""ONNX Runtime backend: runs the graphs of an `emo-export` directory (CPU or CUDA execution provider).

It reads only the directory (manifest + graphs): no torch weights. The IO specs are rebuilt from the manifest's
model config (`emo.io_spec`) and drive the dtype of every feed; the sampler, clip chaining and context pairing
are the same host code as the torch backend's.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig
from ..io_spec import ComponentSpec, component_specs, kv_names, mask_name
from ..manifest import EngineDirError, read_manifest
from ..preprocess.portrait import Portrait
from ..sampling.reference import motion_context, reference_context
from .backend import decode_split
from .ort_providers import execution_providers, require_providers

REQUIRED = ("audio_encoder", "audioproj", "imageproj", "face_locator", "vae_encoder", "vae_decoder", "reference",
            "motion", "denoiser")


@dataclass
class OrtVideo:
    feed: dict[str, np.ndarray]  # the denoiser inputs constant over the video (tokens, face feature, masks, K/V)
    image_tokens: torch.Tensor  # (2, t, c)
    motion_frames: int


def _as_array(x: np.ndarray | torch.Tensor, dtype: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=dtype)


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise EngineDirError("the onnxruntime backend needs onnxruntime: pip install onnxruntime "
                             "(or onnxruntime-gpu for the CUDA provider)") from None
    return onnxruntime


class OnnxRuntimeBackend:
    name = "onnxruntime"
    pipelined = False

    def __init__(self, engine_dir: str | Path, device: str = "cpu", threads: int = 0):
        ort = _ort()
        self.dir = Path(engine_dir)
        self.manifest = read_manifest(self.dir, "onnx", REQUIRED)
        self.cfg = self.manifest.model()
        self.specs: dict[str, ComponentSpec] = component_specs(self.cfg, self.manifest.shape_ranges())
        self.providers = execution_providers(device, ort.get_available_providers())
        self.device, self.dtype = torch.device("cpu"), torch.float32  # host tensors; the provider owns its memory
        self._options = ort.SessionOptions()
        if threads:
            self._options.intra_op_num_threads = threads
        self._sessions: dict[str, object] = {}
        self._session_lock = threading.Lock()

    def _session(self, name: str):
        with self._session_lock:
            if name not in self._sessions:
                ort = _ort()
                path = self.dir / self.manifest.components[name].file
                try:
                    session = ort.InferenceSession(str(path), self._options, providers=self.providers)
                except Exception as e:  # ORT raises its own exception types for corrupt or foreign graphs
                    raise EngineDirError(f"cannot load {path}: {str(e).splitlines()[0]}") from None
                require_providers(session, self.providers, str(path))
                self._sessions[name] = session
            return self._sessions[name]

    def run(self, name: str, feed: dict[str, np.ndarray | torch.Tensor]) -> list[np.ndarray]:
        """Run one graph; inputs are cast to the dtypes of its spec, outputs come back as float32 arrays."""
        spec = self.specs[name]
        prec = self.manifest.components[name].precision
        arrays = {t.name: _as_array(feed[t.name], t.numpy_dtype(prec)) for t in spec.inputs}
        problem = spec.check_shapes({k: v.shape for k, v in arrays.items()})
        if problem:
            raise EngineDirError(problem)
        return [o.astype(np.float32, copy=False) for o in self._session(name).run(None, arrays)]

    def audio_features(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
        longest = self.specs["audio_encoder"].dims["samples"].max
        if waveform.numel() > longest:
            r = self.manifest.shape_ranges()
            seconds = waveform.numel() / r.sample_rate
            raise EngineDirError(f"audio of {seconds:.1f} s (padded to whole clips) is longer than the exported audio "
                                 f"encoder accepts ({r.audio_seconds[2]:g} s); re-export with emo-export "
                                 f"--max-audio-seconds {math.ceil(seconds)}, or split the audio")
        (feats,) = self.run("audio_encoder", {"waveform": waveform.reshape(1, -1).float(),
                                              "num_frames": np.array([num_frames], dtype=np.int64)})
        return torch.from_numpy(feats)

    def _encode(self, pixels: torch.Tensor) -> np.ndarray:
        return self.run("vae_encoder", {"pixels": pixels})[0]

    def prepare_video(self, portrait: Portrait, motion_frames: int) -> OrtVideo:
        emb = portrait.face_emb.reshape(1, -1).float()
        (tokens,) = self.run("imageproj", {"face_embedding": torch.cat([torch.zeros_like(emb), emb])})
        (feature,) = self.run("face_locator", {"face_region": portrait.face_region[None]})
        ref_latent = self._encode(portrait.pixels[None])
        tokens_t = torch.from_numpy(tokens)
        kv = self.run("reference", {"ref_latent": ref_latent,
                                    "ref_context": reference_context(tokens_t, motion_frames)})
        names = [n for i in range(len(kv) // 2) for n in kv_names(i)]
        feed = dict(zip(names, kv)) | {mask_name(k): m.float().numpy() for k, m in enumerate(portrait.masks)}
        feed |= {"image_tokens": tokens, "face_feature": np.concatenate([np.zeros_like(feature), feature])}
        return OrtVideo(feed, tokens_t, motion_frames)

    def prepare_clip(self, video: OrtVideo, motion_pixels: torch.Tensor, windows: torch.Tensor) -> dict:
        (tokens,) = self.run("audioproj", {"windows": windows[None].float()})
        n = video.motion_frames
        if n:
            (motion,) = self.run("motion", {"motion_latents": self._encode(motion_pixels),
                                            "motion_context": motion_context(video.image_tokens, n)})
        else:
            c, hm = self.cfg.unet.block_out_channels[-1], motion_pixels.shape[-1] // self.cfg.vae.downscale // 2 ** (
                len(self.cfg.unet.block_out_channels) - 1)
            motion = np.zeros((2, 0, c, hm, hm), np.float32)
        return video.feed | {"audio_tokens": np.concatenate([np.zeros_like(tokens), tokens]),
                             "motion_features": motion}

    def predict(self, clip: dict, latents: torch.Tensor, t: int, run: RunConfig) -> torch.Tensor:
        feed = clip | {"sample": torch.cat([latents, latents]), "timestep": np.array([t], np.float32),
                       "guidance_scale": np.array([run.guidance_scale], np.float32),
                       "motion_scale": np.array(run.motion_scale, np.float32)}
        return torch.from_numpy(self.run("denoiser", feed)[0])

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents[0].transpose(0, 1)  # c f h w -> f c h w
        chunk = self.manifest.shape_ranges().decode_batch
        return torch.cat([torch.from_numpy(self.run("vae_decoder", {"latents": z[i:i + chunk]})[0])
                          for i in range(0, z.shape[0], chunk)])

    def decode_split(self, latents: torch.Tensor, tail: int):
        return decode_split(self, latents, tail)
