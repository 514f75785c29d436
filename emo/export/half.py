"""fp32 ONNX graph -> fp16 (or bf16) graph, without tracing again.

Tracing a real-size model in half precision on a CPU takes hours (CPUs have no fast half-precision convolutions);
converting the fp32 graph takes seconds and streams the weights one tensor at a time, so a 6 GB graph converts in
little memory.

What changes:
- every float32 source of the graph becomes the half type: initializers, Constant and ConstantOfShape values,
  Cast-to-float nodes, and the float inputs (those the IO spec types FLOAT);
- the ops of `KEEP_FP32` (normalisation statistics, softmax) run in float32: a Cast to float32 in front of each
  of their float inputs and a Cast back after each output. Their weights (norm scales and biases) stay float32;
- inputs and outputs the IO spec types "float32" keep that type, with a Cast at the boundary;
- value_info annotations are dropped (they are optional and would still say float32).

Everything else (structure, names, integer paths, external data layout) is kept, so the graph has the same IO
spec as an fp16 trace of the same model.

Q/DQ graphs (emo-calibrate's INT8/FP8 exports) convert too: their 8-bit weights stay as they are, their scales
become half precision (so quantize/dequantize run on half-precision tensors, as TensorRT's strongly typed INT8/FP8
networks expect), and the graph moves to opset 19, the first whose QuantizeLinear takes float16.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io_spec import FLOAT, ComponentSpec
from .onnx_export import append_external, external_blob

# Ops whose statistics or exponentials need float32: LayerNorm/GroupNorm (exported as InstanceNormalization
# between reshapes) compute a mean and variance over thousands of values; softmax exponentiates attention scores.
KEEP_FP32 = frozenset({"LayerNormalization", "InstanceNormalization", "GroupNormalization", "Softmax"})
HALF_TYPES = ("fp16", "bf16")
# inputs the ONNX spec types float32 whatever the data type: op -> input indices
FLOAT32_INPUTS = {"Resize": (2,)}


@dataclass
class ConvertedGraph:
    name: str
    file: str
    data_file: str | None
    bytes: int
    seconds: float
    kept_fp32: dict[str, int] = field(default_factory=dict)  # op type -> nodes kept in float32


def _onnx():
    import onnx

    return onnx


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 array -> bfloat16 bit patterns (uint16), rounded to nearest even; NaN stays NaN."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        rounded[nan] = np.uint16(0x7FC0)
    return rounded


def _half_bytes(raw: bytes, half: str) -> bytes:
    a = np.frombuffer(raw, dtype=np.float32)
    if half == "bf16":
        return to_bf16_bits(a).tobytes()
    with np.errstate(over="ignore"):  # values beyond 65504 become inf, as an fp16 trace would make them
        return a.astype(np.float16).tobytes()


class _Converter:
    def __init__(self, model, half: str, src_dir: Path, data_out, data_name: str):
        onnx = _onnx()
        self.onnx, self.model, self.graph = onnx, model, model.graph
        self.half = half
        self.elem = onnx.TensorProto.FLOAT16 if half == "fp16" else onnx.TensorProto.BFLOAT16
        self.src_dir, self.data_out, self.data_name = src_dir, data_out, data_name
        self.counter = 0

    def _name(self, base: str) -> str:
        self.counter += 1
        return f"{base}__{self.half}_{self.counter}"

    def _cast(self, src: str, dst: str, to: int, name: str):
        return self.onnx.helper.make_node("Cast", [src], [dst], name=name, to=to)

    def convert_tensor(self, t, to_half: bool = True) -> None:
        """A TensorProto (initializer or attribute) into the new graph: float32 ones to the half type when
        `to_half`, in place; weights kept outside the graph are streamed into the new data file either way."""
        onnx = self.onnx
        half = to_half and t.data_type == onnx.TensorProto.FLOAT
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raw = external_blob(t, self.src_dir)
            append_external(t, _half_bytes(raw, self.half) if half else raw, self.data_out, self.data_name)
        elif half:
            a = onnx.numpy_helper.to_array(t)
            t.ClearField("float_data")
            t.raw_data = _half_bytes(a.astype(np.float32).tobytes(), self.half)
        if half:
            t.data_type = self.elem

    def _fp32_slots(self, keep: frozenset[str]) -> set[tuple[int, int]]:
        """(node index, input index) of every input that must be float32: the inputs of the kept ops and the
        inputs the ONNX spec types float32 whatever the data (Resize's scales)."""
        slots = set()
        for i, n in enumerate(self.graph.node):
            if n.op_type in keep:
                slots |= {(i, k) for k, name in enumerate(n.input) if name}
            for k in FLOAT32_INPUTS.get(n.op_type, ()):
                if k < len(n.input) and n.input[k]:
                    slots.add((i, k))
        return slots

    def run(self, spec: ComponentSpec, keep: frozenset[str]) -> dict[str, int]:
        onnx, g = self.onnx, self.graph
        FLOAT32 = onnx.TensorProto.FLOAT
        slots = self._fp32_slots(keep)
        slot_reads: dict[str, bool] = {}  # tensor -> read only by float32 slots
        for i, n in enumerate(g.node):
            for k, name in enumerate(n.input):
                if name:
                    slot_reads[name] = slot_reads.get(name, True) and (i, k) in slots
        for o in g.output:
            slot_reads[o.name] = False
        # constants read only by float32 slots stay float32 (norm weights, resize scales); the rest become half
        constants = {t.name for t in g.initializer} | \
            {n.output[0] for n in g.node if n.op_type in ("Constant", "ConstantOfShape")}
        stay = {name for name in constants if slot_reads.get(name, False)}
        for t in g.initializer:
            self.convert_tensor(t, to_half=t.name not in stay)
        for n in g.node:
            if n.op_type in ("Constant", "ConstantOfShape"):
                for a in n.attribute:
                    if a.type == onnx.AttributeProto.TENSOR:
                        self.convert_tensor(a.t, to_half=n.output[0] not in stay)
            elif n.op_type == "Cast":
                for a in n.attribute:
                    if a.name == "to" and a.i == FLOAT32:
                        a.i = self.elem
        # float32 islands: a Cast in front of each float32 slot, and after each kept op's outputs
        kept: dict[str, int] = {}
        out_nodes = []
        for i, n in enumerate(g.node):
            for k, name in enumerate(n.input):
                if (i, k) in slots and name not in stay:
                    cast_out = self._name(f"{name}_f32")
                    out_nodes.append(self._cast(name, cast_out, FLOAT32, self._name(f"{n.name or n.op_type}_in")))
                    n.input[k] = cast_out
            out_nodes.append(n)
            if n.op_type not in keep:
                continue
            kept[n.op_type] = kept.get(n.op_type, 0) + 1
            for k, name in enumerate(n.output):
                if name:
                    inner = self._name(f"{name}_f32")
                    n.output[k] = inner
                    out_nodes.append(self._cast(inner, name, self.elem, self._name(f"{n.name or n.op_type}_out")))
        self._boundary(spec, out_nodes)
        del g.value_info[:]
        if any(n.op_type == "QuantizeLinear" for n in g.node):
            from ..calibration.qdq import FP8_OPSET, to_opset_19

            if max(o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")) < FP8_OPSET:
                to_opset_19(onnx, self.model)
        return kept

    def _boundary(self, spec: ComponentSpec, nodes: list) -> None:
        """Inputs and outputs typed as the IO spec says: FLOAT ones in the half type, "float32" ones kept, with a
        Cast between them and the half-precision compute."""
        types = {t.name: t.dtype for t in (*spec.inputs, *spec.outputs)}
        front = [c for v in self.graph.input if (c := self._retype(v, types, nodes, True)) is not None]
        back = [c for v in self.graph.output if (c := self._retype(v, types, nodes, False)) is not None]
        del self.graph.node[:]
        self.graph.node.extend(front + nodes + back)

    def _retype(self, value, types: dict[str, str], nodes: list, is_input: bool):
        """Give a graph input or output its IO-spec type; -> the Cast a float32 one needs, else None."""
        FLOAT32 = self.onnx.TensorProto.FLOAT
        tt = value.type.tensor_type
        if tt.elem_type != FLOAT32:
            return None
        if types.get(value.name, FLOAT) == FLOAT:
            tt.elem_type = self.elem
            return None
        inner = self._name(value.name)  # the half-precision side of the boundary
        for node in nodes:
            names = node.input if is_input else node.output
            for k, name in enumerate(names):
                if name == value.name:
                    names[k] = inner
        if is_input:
            return self._cast(value.name, inner, self.elem, self._name(f"{value.name}_in"))
        return self._cast(inner, value.name, FLOAT32, self._name(f"{value.name}_out"))


def convert_graph(src: str | Path, out_dir: str | Path, spec: ComponentSpec, half: str = "fp16",
                  keep: frozenset[str] = KEEP_FP32) -> ConvertedGraph:
    """Write `<out_dir>/<name>.onnx` (+ `.onnx.data` when the source keeps its weights outside) converted from the
    float32 graph `src`. Files are written under temporary names and renamed when complete."""
    onnx = _onnx()
    if half not in HALF_TYPES:
        raise ValueError(f"half must be one of {', '.join(HALF_TYPES)} (got {half!r})")
    start = time.perf_counter()
    src, out_dir = Path(src), Path(out_dir)
    model = onnx.load(str(src), load_external_data=False)
    final, data_name = out_dir / f"{spec.name}.onnx", f"{spec.name}.onnx.data"
    staged, staged_data = out_dir / f".{spec.name}.onnx.part", out_dir / f".{data_name}.part"
    try:
        with open(staged_data, "wb") as data_out:
            kept = _Converter(model, half, src.parent, data_out, data_name).run(spec, keep)
            external = data_out.tell() > 0
        onnx.save_model(model, str(staged))
        if external:
            staged_data.replace(out_dir / data_name)
        else:
            staged_data.unlink()
            (out_dir / data_name).unlink(missing_ok=True)  # left by an earlier, larger graph
        staged.replace(final)
    finally:
        staged.unlink(missing_ok=True)
        staged_data.unlink(missing_ok=True)
    total = final.stat().st_size + ((out_dir / data_name).stat().st_size if external else 0)
    return ConvertedGraph(spec.name, final.name, data_name if external else None, total,
                          time.perf_counter() - start, kept)
