"""How a network gets its precision: from the graph (strongly typed) or from builder flags (classic TensorRT).

Strongly typed is the default for both flavours: an fp16 export builds an fp16 engine, Q/DQ nodes (from
calibration) make the int8/fp8 parts, and TensorRT does not second-guess the types. Classic TensorRT also builds a
weakly typed network of an fp32 graph with the FP16/BF16 builder flags, letting it pick per layer; TensorRT for RTX
has no such flags, so there the export must already be in the precision wanted.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..errors import InputError

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")
BUILDER_FLAGS = {"fp16": "FP16", "bf16": "BF16"}  # weakly typed builds of an fp32 graph
QDQ_TYPES = {3: "int8", 17: "fp8", 18: "fp8"}  # ONNX TensorProto element types of Q/DQ zero points


@dataclass(frozen=True)
class Typing:
    strongly_typed: bool
    flags: tuple[str, ...]  # BuilderFlag names to set
    precision: str  # what the engine computes in


def quantized_types(graph) -> Counter:
    """Q/DQ node counts by quantized type ("int8", "fp8") in a graph: a path (weights not loaded) or a loaded
    ModelProto."""
    if isinstance(graph, (str, Path)):
        import onnx

        graph = onnx.load(str(graph), load_external_data=False)
    model = graph
    kinds = {i.name: i.data_type for i in model.graph.initializer}
    kinds |= {n.output[0]: a.t.data_type for n in model.graph.node if n.op_type == "Constant"
              for a in n.attribute if a.name == "value"}
    found: Counter = Counter()
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2:
            found[QDQ_TYPES.get(kinds.get(node.input[2]), "other")] += 1
    return found


def network_typing(trt: ModuleType, component: str, graph_precision: str, requested: str | None,
                   quantized: Counter) -> Typing:
    """The typing and builder flags for one component. `graph_precision` is the exported graph's ("fp32" or
    "fp16"); `requested` is --precision (None: what the graph has)."""
    if requested is None or requested == graph_precision:
        return Typing(True, (), graph_precision)
    if requested not in PRECISIONS:
        raise InputError(f"unknown precision {requested!r} (choose from {', '.join(PRECISIONS)})")
    if requested in ("int8", "fp8"):
        if not quantized.get(requested):
            raise InputError(f"{component}: --precision {requested} needs a graph with {requested} Q/DQ nodes "
                             f"(quantize the export first); this graph is plain {graph_precision}")
        return Typing(True, (), requested)
    flag = BUILDER_FLAGS.get(requested)
    if graph_precision == "fp32" and flag and hasattr(trt.BuilderFlag, flag):
        return Typing(False, (flag,), requested)
    if graph_precision == "fp32" and flag:
        raise InputError(f"{component}: this TensorRT builds strongly typed networks only (no {flag} builder "
                         f"flag): export the graphs in {requested} (emo-export --precision {requested})")
    raise InputError(f"{component}: the graph is {graph_precision}; a {requested} engine needs a {requested} export")
