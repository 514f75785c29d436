"""ONNX Runtime backend: runs the graphs of an `emo-export` directory (CPU or CUDA execution provider).

It reads only the directory (manifest + graphs): no torch weights. The IO specs are rebuilt from the manifest's
model config (`emo.io_spec`) and drive the dtype of every feed; the sampler, clip chaining and context pairing
are the same host code as the torch backend's. The conditioning is kept in the denoiser graph's precision and fed
by IO-spec name (`feed()`), the reference K/V as the two entries plus the per-frame entry index.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from ..geometry import Geometry
from ..io_spec import ComponentSpec, component_specs
from ..manifest import EngineDirError, check_audio_length, read_manifest
from ..preprocess.portrait import Portrait
from ..sampling.conditioning import ClipConditioning, StepInputs, VideoConditioning
from ..sampling.reference import motion_context, reference_context, reference_index
from .backend import DecodedClip, decoded_now
from .ort_providers import execution_providers, require_providers

REQUIRED = ("audio_encoder", "audioproj", "imageproj", "face_locator", "vae_encoder", "vae_decoder", "reference",
            "motion", "denoiser")


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

    def run(self, name: str, feed: dict[str, np.ndarray | torch.Tensor], keep_dtype: bool = False
            ) -> list[np.ndarray]:
        """Run one graph; inputs are cast to the dtypes of its spec. Outputs come back as float32 arrays, or as the
        graph makes them with `keep_dtype` (conditioning that goes back into a graph of the same precision)."""
        spec = self.specs[name]
        prec = self.manifest.components[name].precision
        arrays = {t.name: _as_array(feed[t.name], t.numpy_dtype(prec)) for t in spec.inputs}
        problem = spec.check_shapes({k: v.shape for k, v in arrays.items()})
        if problem:
            raise EngineDirError(problem)
        outputs = self._session(name).run(None, arrays)
        return outputs if keep_dtype else [o.astype(np.float32, copy=False) for o in outputs]

    def _denoiser_float(self) -> torch.dtype:
        """The dtype of the denoiser's float inputs: conditioning is kept in it, so no step converts it again."""
        return torch.float16 if self.manifest.components["denoiser"].precision == "fp16" else torch.float32

    def audio_features(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
        check_audio_length(self.manifest.shape_ranges(), self.specs["audio_encoder"].dims["samples"].max,
                           waveform.numel())
        (feats,) = self.run("audio_encoder", {"waveform": waveform.reshape(1, -1).float(),
                                              "num_frames": np.array([num_frames], dtype=np.int64)})
        return torch.from_numpy(feats)

    def _encode(self, pixels: torch.Tensor) -> np.ndarray:
        return self.run("vae_encoder", {"pixels": pixels})[0]

    def prepare_video(self, portrait: Portrait, motion_frames: int) -> VideoConditioning:
        dt = self._denoiser_float()
        emb = portrait.face_emb.reshape(1, -1).float()
        (tokens,) = self.run("imageproj", {"face_embedding": torch.cat([torch.zeros_like(emb), emb])})
        (feature,) = self.run("face_locator", {"face_region": portrait.face_region[None]})
        tokens_t = torch.from_numpy(tokens)
        kv = self.run("reference", {"ref_latent": self._encode(portrait.pixels[None]),
                                    "ref_context": reference_context(tokens_t, motion_frames)}, keep_dtype=True)
        kv_t = [torch.from_numpy(t).to(dt) for t in kv]
        face = torch.from_numpy(np.concatenate([np.zeros_like(feature), feature]))
        return VideoConditioning(tokens_t.to(dt), face.to(dt), [m.to(dt) for m in portrait.masks],
                                 list(zip(kv_t[0::2], kv_t[1::2], strict=True)))

    def prepare_clip(self, video: VideoConditioning, motion_pixels: torch.Tensor, windows: torch.Tensor
                     ) -> ClipConditioning:
        dt = self._denoiser_float()
        (tokens,) = self.run("audioproj", {"windows": windows[None].float()})
        n = motion_pixels.shape[0]
        if n:
            (motion,) = self.run("motion", {"motion_latents": self._encode(motion_pixels),
                                            "motion_context": motion_context(video.image_tokens, n)})
        else:
            mid = Geometry.of(self.cfg, motion_pixels.shape[-1]).mid
            motion = np.zeros((2, 0, self.cfg.unet.block_out_channels[-1], mid, mid), np.float32)
        audio = torch.from_numpy(np.concatenate([np.zeros_like(tokens), tokens]))
        return ClipConditioning(video, audio.to(dt), torch.from_numpy(motion).to(dt), reference_index(tokens.shape[1]))

    def step(self, clip: ClipConditioning, inputs: StepInputs) -> torch.Tensor:
        return torch.from_numpy(self.run("denoiser", clip.feed() | inputs.feed())[0])

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents[0].transpose(0, 1)  # c f h w -> f c h w
        chunk = self.manifest.shape_ranges().decode_batch
        return torch.cat([torch.from_numpy(self.run("vae_decoder", {"latents": z[i:i + chunk]})[0])
                          for i in range(0, z.shape[0], chunk)])

    def decode_split(self, latents: torch.Tensor, tail: int) -> DecodedClip:
        return decoded_now(self.decode(latents), tail)
