"""Insert Q/DQ into an fp32 graph: TensorRT's explicit-quantization pattern, runnable by ONNX Runtime on the CPU.

For every quantized layer (see policy.py): QuantizeLinear → DequantizeLinear on its activation input with one
per-tensor scale amax / qmax (shared by all quantized consumers of that tensor, e.g. the q, k, v projections), and
its weight stored in 8 bits with a per-output-channel scale, read through DequantizeLinear. Zero points are 0
(symmetric: TensorRT's only mode). Outputs and biases stay in float, so the graph's IO, names and shapes are those
of the fp32 graph and the same IO spec describes it.

FP8 is E4M3 (`FLOAT8E4M3FN`, qmax 448, saturating), which needs QuantizeLinear-19: those graphs are moved to
opset 19, a relabelling for the ops our exports use (the only ops whose signature changed between 17 and 19 are the
Reduce family, whose `axes` attribute becomes an input, handled here).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .policy import WEIGHT_OPS, QuantPolicy

QMAX = {"int8": 127.0, "fp8": 448.0}
FP8_OPSET = 19
_MIN_AMAX = 1e-8  # a tensor that never left 0 still needs a valid (positive) scale
_REDUCE_AXES_INPUT_18 = frozenset("ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin "
                                  "ReduceProd ReduceSumSquare".split())
MAX_INLINE_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with room for the graph itself


def onnx_module():
    """The onnx package, or an error naming the extra that installs it."""
    try:
        import onnx
    except ImportError:
        raise RuntimeError("emo-calibrate needs onnx: pip install 'emo-runtime[calibrate]'") from None
    return onnx


@dataclass(frozen=True)
class QuantTarget:
    node: str
    activation: str  # input quantized per tensor
    weight: str  # initializer quantized per output channel
    axis: int  # the weight's output-channel axis


def quant_targets(model, policy: QuantPolicy) -> list[QuantTarget]:
    """The layers of `model` that the policy quantizes: weight ops with a constant 2-D+ weight, not kept."""
    inits = {t.name: t for t in model.graph.initializer}
    targets = []
    for node in model.graph.node:
        if node.op_type not in WEIGHT_OPS or not policy.quantizes(node.name) or len(node.input) < 2:
            continue
        act, weight = node.input[0], node.input[1]
        if weight not in inits or act in inits or len(inits[weight].dims) < 2:
            continue  # activation x activation (attention scores), or a constant-only op
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Conv":
            axis = 0  # (out, in, kh, kw)
        elif node.op_type == "Gemm":
            if "transA" in attrs and attrs["transA"].i:
                continue
            axis = 0 if "transB" in attrs and attrs["transB"].i else 1  # B (out, in) or (in, out)
        else:
            if len(inits[weight].dims) != 2:
                continue
            axis = 1  # MatMul B (in, out)
        targets.append(QuantTarget(node.name, act, weight, axis))
    return targets


def _encode(x: np.ndarray, fmt: str) -> tuple[int, bytes]:
    """Values already divided by their scale -> (ONNX data type, raw bytes) of the 8-bit tensor."""
    onnx = onnx_module()
    q = QMAX[fmt]
    if fmt == "int8":
        return onnx.TensorProto.INT8, np.clip(np.rint(x), -q, q).astype(np.int8).tobytes()  # rint: half to even
    from ml_dtypes import float8_e4m3fn

    return onnx.TensorProto.FLOAT8E4M3FN, np.clip(x, -q, q).astype(float8_e4m3fn).tobytes()


def quantize_weight(w: np.ndarray, axis: int | None, fmt: str) -> tuple[int, bytes, np.ndarray]:
    """Symmetric quantization of a weight, per channel along `axis` (or per tensor) -> (type, bytes, scales)."""
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=reduce) if axis is not None else np.abs(w).max()
    scale = (np.maximum(amax, _MIN_AMAX) / QMAX[fmt]).astype(np.float32)
    shape = [-1 if i == axis else 1 for i in range(w.ndim)]
    dtype, raw = _encode(w / scale.reshape(shape), fmt)
    return dtype, raw, scale


def _zero(onnx, name: str, dtype: int, n: int | None):
    """A zero point of the 8-bit type: a scalar, or n zeros for per-axis scales."""
    return onnx.helper.make_tensor(name, dtype, [] if n is None else [n], b"\0" * (n or 1), raw=True)


def to_opset_19(onnx, model) -> None:
    """Relabel a graph of our exports to opset 19 (Q/DQ of FP8 and of float16 inputs need it)."""
    for node in model.graph.node:
        if node.op_type in _REDUCE_AXES_INPUT_18:
            axes = [a for a in node.attribute if a.name == "axes"]
            if axes:
                name = f"{node.name}_axes"
                model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(axes[0].ints, np.int64), name))
                node.attribute.remove(axes[0])
                node.input.append(name)
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            op.version = max(op.version, FP8_OPSET)
    model.ir_version = max(model.ir_version, 9)  # float8 types


def quantize_graph(src: Path, dst: Path, amax: dict[str, float], policy: QuantPolicy, fmt: str) -> int:
    """Write the Q/DQ version of the fp32 graph `src` to `dst` (weights over 2 GB in `dst.name + '.data'`).

    `amax` holds the calibrated max |x| of every target's activation. Returns the number of quantized layers."""
    onnx = onnx_module()
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    if fmt not in QMAX:
        raise ValueError(f"format must be one of {', '.join(QMAX)} (got {fmt!r})")
    model = onnx.load(str(src))
    targets = quant_targets(model, policy)
    by_node = {t.node: t for t in targets}
    inits = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for i in node.input:
            uses[i] = uses.get(i, 0) + 1
    qtype = onnx.TensorProto.INT8 if fmt == "int8" else onnx.TensorProto.FLOAT8E4M3FN
    new_inits, nodes, done = [], [], {}
    for node in model.graph.node:
        t = by_node.get(node.name)
        if t is not None:
            if t.activation not in done:
                scale = np.float32(max(amax[t.activation], _MIN_AMAX) / QMAX[fmt])
                s, z = f"{t.activation}_scale", f"{t.activation}_zero_point"
                new_inits += [numpy_helper.from_array(np.array(scale), s), _zero(onnx, z, qtype, None)]
                nodes += [helper.make_node("QuantizeLinear", [t.activation, s, z], [f"{t.activation}_q"],
                                           name=f"{t.activation}_QuantizeLinear"),
                          helper.make_node("DequantizeLinear", [f"{t.activation}_q", s, z], [f"{t.activation}_dq"],
                                           name=f"{t.activation}_DequantizeLinear")]
                done[t.activation] = f"{t.activation}_dq"
            if t.weight not in done:
                w = numpy_helper.to_array(inits[t.weight])
                axis = t.axis if policy.per_channel_weights else None
                dtype, raw, scales = quantize_weight(w, axis, fmt)
                q, s, z = f"{t.weight}_quantized", f"{t.weight}_scale", f"{t.weight}_zero_point"
                new_inits += [helper.make_tensor(q, dtype, list(w.shape), raw, raw=True),
                              numpy_helper.from_array(scales, s),
                              _zero(onnx, z, qtype, scales.size if axis is not None else None)]
                dq = helper.make_node("DequantizeLinear", [q, s, z], [f"{t.weight}_dq"],
                                      name=f"{t.weight}_DequantizeLinear")
                if axis is not None:
                    dq.attribute.append(helper.make_attribute("axis", axis))
                nodes.append(dq)
                done[t.weight] = f"{t.weight}_dq"
                if uses[t.weight] == 1:
                    model.graph.initializer.remove(inits[t.weight])
            node.input[0], node.input[1] = done[t.activation], done[t.weight]
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(new_inits)
    if fmt == "fp8":
        to_opset_19(onnx, model)
    # summed per tensor: protobuf cannot size the whole model past 2 GB
    big = sum(t.ByteSize() for t in model.graph.initializer) > MAX_INLINE_BYTES
    dst.with_name(dst.name + ".data").unlink(missing_ok=True)
    onnx.save_model(model, str(dst), save_as_external_data=big, all_tensors_to_one_file=True,
                    location=dst.name + ".data", size_threshold=1024)
    return len(targets)
