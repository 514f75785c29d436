"""ONNX Runtime backend: runs the graphs of an ONNX export directory (made by emo-export) on the CPU or the CUDA
execution provider.

It reads only the directory (manifest + graphs): no torch weights. The IO specs are rebuilt from the manifest's
model config (`emo.io_spec`) and give the dtype of every feed; everything but running a graph is the shared graph
backend's (`graph_backend`): the same sampler, clip chaining and CFG halves as the torch backends'.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from ..manifest import EngineDirError, read_manifest
from .graph_backend import TORCH_DTYPES, GraphBackend
from .ort_providers import execution_providers, require_providers

REQUIRED = ("audio_encoder", "audioproj", "imageproj", "face_locator", "vae_encoder", "vae_decoder", "reference",
            "motion", "denoiser")


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise EngineDirError("the onnxruntime backend needs onnxruntime: pip install onnxruntime "
                             "(or onnxruntime-gpu for the CUDA provider)") from None
    return onnxruntime


class OnnxRuntimeBackend(GraphBackend):
    name = "onnxruntime"

    def __init__(self, export_dir: str | Path, device: str = "cpu", threads: int = 0,
                 required: tuple[str, ...] = REQUIRED):
        ort = _ort()
        super().__init__(Path(export_dir), read_manifest(export_dir, "onnx", required))
        if self.manifest.precision == "bf16":
            raise EngineDirError(f"{export_dir} holds bf16 graphs, which are for TensorRT (emo-build-engine): ONNX "
                                 f"Runtime runs fp32 and fp16 exports")
        self.providers = execution_providers(device, ort.get_available_providers())
        self.device, self.dtype = torch.device("cpu"), torch.float32  # host tensors; the provider owns its memory
        self._dtypes = {c: {t.name: t.numpy_dtype(self.manifest.components[c].precision) for t in spec.inputs}
                        for c, spec in self.specs.items() if c in self.manifest.components}  # the feeds' dtypes
        self._options = ort.SessionOptions()
        if threads:
            self._options.intra_op_num_threads = threads
        self._sessions: dict[str, object] = {}
        self._session_lock = threading.Lock()

    def _session(self, name: str):
        with self._session_lock:
            if name not in self._sessions:
                ort = _ort()
                path = self.directory / self.manifest.components[name].file
                try:
                    session = ort.InferenceSession(str(path), self._options, providers=self.providers)
                except Exception as e:  # ORT raises its own exception types for corrupt or foreign graphs
                    raise EngineDirError(f"cannot load {path}: {str(e).splitlines()[0]}") from None
                require_providers(session, self.providers, str(path))
                self._sessions[name] = session
            return self._sessions[name]

    def input_dtype(self, component: str, name: str) -> torch.dtype:
        return TORCH_DTYPES[self._dtypes[component][name]]

    def arrays(self, component: str, feed: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """The feed as the graph takes it: each input in its spec's dtype, contiguous, checked against the spec's
        shapes."""
        spec = self.specs[component]
        arrays = {name: np.ascontiguousarray(feed[name].detach().cpu().numpy(), dtype=dtype)
                  for name, dtype in self._dtypes[component].items()}
        problem = spec.check_shapes({k: v.shape for k, v in arrays.items()})
        if problem:
            raise EngineDirError(problem)
        return arrays

    def run_arrays(self, component: str, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Run the graph on `arrays` (see `arrays`) -> its outputs by name, in the graph's dtypes."""
        names = [t.name for t in self.specs[component].outputs]
        return dict(zip(names, map(torch.from_numpy, self._session(component).run(names, arrays)), strict=True))

    def call(self, component: str, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.run_arrays(component, self.arrays(component, feed))
