"""What gets quantized and what stays in high precision: one explicit, named policy per build.

Only layers with a constant weight are quantized (Conv, Gemm, and MatMul whose second input is a weight): their
activation input per tensor, their weight per output channel, as TensorRT's explicit quantization expects
(symmetric, zero point 0). Everything else keeps the graph's float precision on purpose:
  - GroupNorm (exported as InstanceNormalization), LayerNorm and Softmax are never quantized: their statistics
    and exponentials are where 8 bits lose most, and they are cheap;
  - attention's two activation x activation products (Q·Kᵀ and P·V) stay in float: softmax probabilities span
    many orders of magnitude that a per-tensor 8-bit scale cannot hold;
  - the time embedding (and the per-resnet projections of it) steers every layer at every step;
  - the first and last convolutions touch the latents themselves (4 channels, little compute);
  - the audio path (the audio cross-attention modules; audioproj and the audio encoder are not quantized at all)
    carries the lip motion, the first thing a quantization error would show.
Patterns are fnmatch globs on ONNX node names, which torch's exporter builds from module scopes
(`/denoiser/conv_in/Conv`, `/denoiser/audio_modules.0/...`) and de-duplicates with `_N` suffixes on repeated
scopes (`/refnet/resnets.0_1/time_emb_proj_1/Gemm`); names are matched with those suffixes removed.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from fnmatch import fnmatchcase

WEIGHT_OPS = ("Conv", "Gemm", "MatMul")
FORMATS = ("int8", "fp8")
_DEDUP = re.compile(r"_\d+(?=/|$)")  # the exporter's suffix on a repeated scope name


def scope_name(node_name: str) -> str:
    """`/refnet/resnets.0_1/time_emb_proj_1/Gemm` -> `/refnet/resnets.0/time_emb_proj/Gemm`."""
    return _DEDUP.sub("", node_name)


@dataclass(frozen=True)
class QuantPolicy:
    name: str
    components: tuple[str, ...]  # graphs that get Q/DQ; the others are copied from the fp32 export
    keep: tuple[str, ...]  # node-name globs left in high precision
    per_channel_weights: bool = True

    def quantizes(self, node_name: str) -> bool:
        """True unless the node matches one of the keep patterns."""
        name = scope_name(node_name)
        return not any(fnmatchcase(name, p) for p in self.keep)

    def with_keep(self, extra: tuple[str, ...]) -> "QuantPolicy":
        return replace(self, keep=self.keep + tuple(p for p in extra if p not in self.keep))

    def with_components(self, components: tuple[str, ...]) -> "QuantPolicy":
        return replace(self, components=components)

    def to_dict(self) -> dict:
        return asdict(self) | {"weight_ops": list(WEIGHT_OPS),
                               "never_quantized": ["GroupNorm/InstanceNormalization", "LayerNormalization", "Softmax",
                                                   "attention Q·Kᵀ and P·V (activation x activation MatMul)"]}


_TIME = ("*/time_embedding/*", "*/time_emb_proj/*")
_EDGES = ("*/conv_in/*", "*/conv_out/*")
_AUDIO = ("*/audio_modules.*",)

POLICIES: dict[str, QuantPolicy] = {
    # the UNets (denoiser every step, ReferenceNet halves once per video / clip); VAE, projections, audio stay fp32
    "default": QuantPolicy("default", ("denoiser", "reference", "motion"), _TIME + _EDGES + _AUDIO),
    # also the audio cross-attention: more of the denoiser in 8 bits, at the lip-motion path's risk
    "audio": QuantPolicy("audio", ("denoiser", "reference", "motion"), _TIME + _EDGES),
}
