"""torch-fast's FP8 scales from emo-calibrate's recorded activation ranges: one calibration for both the exported
graphs (Q/DQ) and the torch step (`--fp8-scales`).

emo-calibrate records max |x| per ONNX tensor: the activation input of each quantized layer of the fp32 graph.
The torch step needs it per module. ONNX node names do not name modules reliably (the exporter scopes repeated
calls and folds most linear weights into anonymous transposed initializers), so a graph layer is matched to its
module by its weight: the same float32 values (in the module's orientation) are the same layer.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from ..runtime.fp8_convert import Fp8Scales
from ..runtime.fp8_linear import quantizable
from .policy import QuantPolicy
from .qdq import onnx_module, quant_targets


def _key(w: np.ndarray) -> str:
    """Identity of a weight: its shape and float32 bytes."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    return f"{w.shape}:{hashlib.sha256(w.tobytes()).hexdigest()}"


def module_keys(module: nn.Module) -> dict[str, str]:
    """weight identity -> qualified name, for every layer torch-fast's FP8 step can quantize under `module`."""
    return {_key(layer.weight.detach().float().cpu().numpy()): name for name, layer in quantizable(module)}


@dataclass(frozen=True)
class MatchedScales:
    scales: Fp8Scales
    matched: int  # graph layers whose module was found
    unmatched: tuple[str, ...]  # graph layers (ONNX node names) with no module of the same weight (spatial
    # convolutions, which only the graphs quantize, are not counted)


def scales_from_graph(graph: str | Path, activation_amax: dict[str, float], keys: dict[str, str],
                      policy: QuantPolicy) -> MatchedScales:
    """Per-module activation ranges from the ranges recorded on the fp32 graph `graph` (tensor name -> amax, as
    emo-calibrate's calibration record holds them), for the modules of `keys` (`module_keys`)."""
    onnx = onnx_module()
    model = onnx.load(str(graph))
    inits = {t.name: t for t in model.graph.initializer}
    ops = {n.name: n.op_type for n in model.graph.node}
    amax: dict[str, float] = {}
    unmatched = []
    for t in quant_targets(model, policy):
        w = onnx.numpy_helper.to_array(inits[t.weight])
        if ops[t.node] == "Conv" and w.shape[2:] != (1, 1):
            continue  # a spatial convolution: quantized in the graphs, not by the torch step
        if ops[t.node] != "Conv" and t.axis == 1:  # MatMul / Gemm weights are (in, out): a Linear's is (out, in)
            w = w.T
        name = keys.get(_key(w))
        if name is None or t.activation not in activation_amax:
            unmatched.append(t.node)
            continue
        amax[name] = max(amax.get(name, 0.0), float(activation_amax[t.activation]))
    return MatchedScales(Fp8Scales(amax, policy.keep, policy.per_channel_weights), len(amax), tuple(unmatched))
