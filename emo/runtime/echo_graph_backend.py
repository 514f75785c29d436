"""EchoMimic over the graphs of an export directory (emo-export of an EchoMimic model): the same window loop as
eager torch (`emo.sampling.echo_video.sample_video`), each window's guided prediction from the denoiser graph.

What stays on the host: the log-mel and the per-frame windows of the whisper features, assembling the CFG halves
of each window (`window_halves`), averaging the windows and the sampler. The graphs: audio_encoder (one 30-s
segment), vae_encoder + reference (the reference K/V, once per video), face_locator, denoiser, vae_decoder.
"""
from __future__ import annotations

import numpy as np
import torch

from ..io_spec import ECHOMIMIC_COMPONENTS, kv_names
from ..manifest import EngineDirError
from ..sampling.echo_video import EchoConditioning, Predict, window_halves
from ..sampling.latents import decode_in_chunks
from .graph_backend import GraphBackend


class EchoGraphBackend:
    """The EchoMimic backend protocol (as `EchoTorchBackend`) over a graph backend's `call`: each component fed
    by its IO spec's input names."""

    captures = None
    pipelined = False

    def __init__(self, graphs: GraphBackend):
        self.graphs = graphs
        self.manifest, self.cfg, self.precision = graphs.manifest, graphs.cfg, graphs.precision
        self.name, self.device, self.dtype = graphs.name, graphs.device, graphs.dtype
        if self.cfg.family != "echomimic":
            raise EngineDirError(f"{graphs.directory} holds a {self.manifest.family} export, not an EchoMimic one")
        self.family = self.manifest.family
        self.decode_batch = self.manifest.shape_ranges().decode_batch

    @torch.no_grad()
    def audio_tokens(self, samples: np.ndarray, fps: int) -> torch.Tensor:
        """16 kHz samples -> whisper tokens per video frame (F, 50, 384), float32 on the host."""
        from ..preprocess.whisper_features import segment_features, whisper_chunks

        def encode(mel: torch.Tensor) -> torch.Tensor:
            return self.graphs.call("audio_encoder", {"mel": mel})["hidden_states"]

        return whisper_chunks(segment_features(encode, samples), fps).float().cpu()

    @torch.no_grad()
    def conditioning(self, ref_pixels: torch.Tensor, face_mask: torch.Tensor, tokens: torch.Tensor
                     ) -> EchoConditioning:
        """ref_pixels (3, H, W) in [-1, 1]; face_mask (1, H, W); tokens (F, t, c) -> the video's conditioning, in
        the denoiser's input dtypes."""
        g = self.graphs
        latent = g.call("vae_encoder", {"pixels": ref_pixels[None]})["latents"]
        out = g.call("reference", {"ref_latent": latent})
        kv = [tuple(g.as_denoiser_input(n, out[n]) for n in kv_names(i)) for i in range(len(out) // 2)]
        face = g.call("face_locator", {"face_mask": face_mask[None]})["face_feature"]
        return EchoConditioning(kv, g.as_denoiser_input("face_feature", face),
                                g.as_denoiser_input("audio_tokens", tokens))

    def predictor(self, cond: EchoConditioning, guidance_scale: float) -> Predict:
        g = self.graphs
        kv = {n: t for i, pair in enumerate(cond.ref_kv) for n, t in zip(kv_names(i), pair, strict=True)}
        scale = g.as_denoiser_input("guidance_scale", torch.full((1,), guidance_scale))

        @torch.no_grad()
        def predict(x: torch.Tensor, t: torch.Tensor, frames: list[int], guided: bool) -> torch.Tensor:
            sample, audio, face = window_halves(cond, x, frames, guided)
            feed = {"sample": sample, "timestep": t, "guidance_scale": scale, "audio_tokens": audio,
                    "face_feature": face, **kv}
            return g.call("denoiser", feed)["noise_pred"].to(self.dtype)

        return predict

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (1, 4, f, h, w) -> frames (f, 3, H, W) in [0, 1]."""
        return decode_in_chunks(lambda z: self.graphs.call("vae_decoder", {"latents": z})["frames"].float(), latents,
                                self.decode_batch)


def onnxruntime_echo_backend(export_dir: str, device: str = "cpu", threads: int = 0) -> EchoGraphBackend:
    """An EchoMimic export directory run by ONNX Runtime."""
    from .onnxruntime_backend import OnnxRuntimeBackend

    return EchoGraphBackend(OnnxRuntimeBackend(export_dir, device, threads, required=ECHOMIMIC_COMPONENTS))
