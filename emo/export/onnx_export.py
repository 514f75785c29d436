"""torch -> ONNX for one component, driven by its IO spec; graphs over 2 GB keep their weights in one side file."""
from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..io_spec import ComponentSpec
from ..kernels import registry
from .inputs import example_inputs

OPSET = 17


@dataclass(frozen=True)
class ExportedGraph:
    name: str
    file: str  # relative to the output dir
    data_file: str | None  # external weights, when the graph is over 2 GB
    bytes: int
    seconds: float


def _tensors(onnx, model):
    """Every tensor that can hold weights: initializers and Constant-node attributes."""
    yield from model.graph.initializer
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t


def external_blob(t, base: Path) -> bytes:
    """The bytes of a tensor whose data lives outside the graph, read from its file under `base`."""
    info = {e.key: e.value for e in t.external_data}
    with open(base / info["location"], "rb") as src:
        src.seek(int(info.get("offset", 0)))
        return src.read(int(info["length"])) if "length" in info else src.read()


def append_external(t, blob: bytes, out, location: str) -> None:
    """Write `blob` at the end of the open data file `out` (named `location`) and point the tensor `t` at it."""
    offset = out.tell()
    out.write(blob)
    del t.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(blob)))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value


def _move_graph(onnx, traced: Path, final: Path, data_name: str) -> str | None:
    """Move the traced graph to `final`. torch writes graphs over 2 GB with one side file per tensor; those are
    gathered into one `data_name` file next to `final`, streaming one tensor at a time (no second copy of the
    weights in memory). Returns the data file's name, or None for a self-contained graph."""
    model = onnx.load(str(traced), load_external_data=False)
    external = [t for t in _tensors(onnx, model) if t.data_location == onnx.TensorProto.EXTERNAL]
    if not external:
        traced.replace(final)
        return None
    staged_data = traced.parent / data_name
    with open(staged_data, "wb") as out:
        for t in external:
            append_external(t, external_blob(t, traced.parent), out, data_name)
    staged = traced.parent / final.name
    onnx.save_model(model, str(staged))
    staged_data.replace(final.parent / data_name)
    staged.replace(final)
    return data_name


def _onnx():
    try:
        import onnx
    except ImportError:
        raise RuntimeError("ONNX export needs the onnx package: pip install 'emo-runtime[export]'") from None
    return onnx


@torch.no_grad()
def export_component(module: nn.Module, spec: ComponentSpec, values: dict[str, int], precision: str,
                     out_dir: Path, opset: int = OPSET) -> ExportedGraph:
    """Trace `module` at the operating point `values` and write `<name>.onnx` (+ `<name>.onnx.data`) to out_dir.

    Every named dimension of the spec is a dynamic axis, so the graph runs at any point of the spec's ranges.
    The module must already be in the dtype of `spec.precision(precision)`.
    """
    onnx = _onnx()
    start = time.perf_counter()
    inputs = example_inputs(spec, values, precision)
    final = out_dir / f"{spec.name}.onnx"
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{spec.name}-") as tmp:
        traced = Path(tmp) / "graph.onnx"
        with warnings.catch_warnings(), registry.using(()):  # plain torch ops only in graphs
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python values, checked by tests
            torch.onnx.export(module, tuple(inputs.values()), str(traced), dynamo=False, opset_version=opset,
                              input_names=[t.name for t in spec.inputs],
                              output_names=[t.name for t in spec.outputs],
                              dynamic_axes=spec.dynamic_axes(), do_constant_folding=True)
        data_file = _move_graph(onnx, traced, final, f"{spec.name}.onnx.data")
    if data_file is None:
        (out_dir / f"{spec.name}.onnx.data").unlink(missing_ok=True)  # left by an earlier, larger export
    total = final.stat().st_size + ((out_dir / data_file).stat().st_size if data_file else 0)
    return ExportedGraph(spec.name, final.name, data_file, total, time.perf_counter() - start)
