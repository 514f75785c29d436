"""The denoiser's linear layers swapped for FP8 ones, as a scales file says.

A scales file (JSON, written by emo.calibration.linear_amax) holds the quantization policy's keep patterns and
weight granularity, and the calibrated amax of each layer's input, by the module's qualified name. Its keep
patterns are fnmatch globs on ONNX-style node names (`/denoiser/down_blocks.0/attentions.0/proj_in/Gemm`), the
same ones emo-calibrate applies to the exported graphs, so both quantize the same layers. A layer without a
recorded amax stays in high precision (it is listed), never quantized with a guessed scale.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from torch import nn

from ..errors import InputError
from .fp8_linear import Fp8Conv1x1, Fp8Linear, quantizable

SCALES_FORMAT = 1


@dataclass(frozen=True)
class Fp8Scales:
    amax: dict[str, float]  # module qualified name (under the denoiser) -> max |input|
    keep: tuple[str, ...]  # node-name globs left in high precision (the quantization policy's)
    per_channel_weights: bool = True

    @classmethod
    def load(cls, path: str | Path) -> "Fp8Scales":
        try:
            data = json.loads(Path(path).read_text())
            if data.get("format") != SCALES_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {SCALES_FORMAT}")
            return cls({k: float(v) for k, v in data["amax"].items()}, tuple(data["keep"]),
                       bool(data["per_channel_weights"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise InputError(f"{path}: not an FP8 scales file ({e})") from None

    def to_json(self) -> dict:
        return {"format": SCALES_FORMAT, "keep": list(self.keep), "per_channel_weights": self.per_channel_weights,
                "amax": self.amax}


def node_name(qualname: str, layer: nn.Module, component: str = "denoiser") -> str:
    """`audio_modules.0.attn1.to_q` -> `/denoiser/audio_modules.0/attn1/to_q/Gemm`: the scope torch's ONNX
    exporter gives the layer (list indices stay joined to their list's name)."""
    scopes: list[str] = []
    for part in qualname.split("."):
        if part.isdigit() and scopes:
            scopes[-1] += f".{part}"
        else:
            scopes.append(part)
    op = "Conv" if isinstance(layer, nn.Conv2d) else "Gemm"
    return "/".join(["", component, *scopes, op])


@dataclass(frozen=True)
class Fp8Report:
    quantized: tuple[str, ...]
    kept: tuple[str, ...]  # by the policy
    uncalibrated: tuple[str, ...]  # no amax recorded: left in high precision


def convert_to_fp8(module: nn.Module, scales: Fp8Scales, emulate: bool = False) -> Fp8Report:
    """Replace, in place, every Linear / 1x1 Conv2d of `module` the policy quantizes and the scales cover."""
    quantized, kept, missing = [], [], []
    for name, layer in list(quantizable(module)):
        if any(fnmatchcase(node_name(name, layer), p) for p in scales.keep):
            kept.append(name)
            continue
        if name not in scales.amax:
            missing.append(name)
            continue
        amax, per_channel = scales.amax[name], scales.per_channel_weights
        fp8 = (Fp8Conv1x1.from_conv(layer, amax, per_channel, emulate) if isinstance(layer, nn.Conv2d)
               else Fp8Linear.from_linear(layer, amax, per_channel, emulate))
        replace_layer(module, name, fp8)
        quantized.append(name)
    return Fp8Report(tuple(quantized), tuple(kept), tuple(missing))


def replace_layer(module: nn.Module, name: str, layer: nn.Module) -> nn.Module:
    """Put `layer` at the qualified `name` under `module` -> the layer that was there."""
    parent, _, attr = name.rpartition(".")
    owner = module.get_submodule(parent) if parent else module
    old = getattr(owner, attr)
    setattr(owner, attr, layer)
    return old
