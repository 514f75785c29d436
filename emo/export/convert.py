"""An fp32 export directory -> an fp16 (or bf16) one, graph by graph (`half.convert_graph`), with its manifest.

No torch and no model weights are needed: the graphs are the model. Components that are float32-only by their IO
spec (the audio encoders) are copied as they are.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from ..errors import InputError
from ..io_spec import component_specs
from ..manifest import GraphEntry, Manifest, file_sha256, read_manifest, tool_versions
from .half import HALF_TYPES, KEEP_FP32, ConvertedGraph, convert_graph


def _copy_graph(src_dir: Path, entry: GraphEntry, out_dir: Path, name: str) -> ConvertedGraph:
    for f in (entry.file, entry.data_file):
        if f is not None:
            staged = out_dir / f".{f}.part"
            shutil.copyfile(src_dir / f, staged)
            staged.replace(out_dir / f)
    if entry.data_file is None:
        (out_dir / f"{name}.onnx.data").unlink(missing_ok=True)
    return ConvertedGraph(name, entry.file, entry.data_file, entry.bytes, 0.0)


def source_hash(src_dir: Path, entry: GraphEntry) -> str:
    return file_sha256(*(src_dir / f for f in (entry.file, entry.data_file) if f is not None))


def convert_export(src_dir: str | Path, out_dir: str | Path, half: str = "fp16",
                   components: tuple[str, ...] | None = None,
                   on_done: Callable[[ConvertedGraph], None] | None = None) -> Manifest:
    """Convert the graphs of the fp32 export `src_dir` (or of its INT8/FP8 Q/DQ export) into `out_dir` (created;
    its manifest rewritten after each graph). The manifest records, per graph, the SHA-256 of the graph it came
    from; a Q/DQ export keeps its quantization record (the accuracy gate was measured on the float32 graphs)."""
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if half not in HALF_TYPES:
        raise InputError(f"graphs convert to {' or '.join(HALF_TYPES)}, not {half}")
    src = read_manifest(src_dir, "onnx")
    if src.precision != "fp32" and not (src.quantization and not src.conversion):
        raise InputError(f"{src_dir} holds {src.precision} graphs; conversion starts from an fp32 export (emo-export "
                         f"--precision fp32) or its INT8/FP8 export (emo-calibrate)")
    names = tuple(src.components) if components is None else components
    missing = [c for c in names if c not in src.components]
    if missing:
        raise InputError(f"{src_dir} has no graph of {', '.join(missing)}")
    if out_dir.resolve() == src_dir.resolve():
        raise InputError("the converted graphs need another directory than the fp32 export's")
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = component_specs(src.model(), src.shape_ranges())
    m = Manifest(format="onnx", precision=half, opset=src.opset, model_config=src.model_config,
                 config_hash=src.config_hash, weights_hash=src.weights_hash, ranges=src.ranges,
                 tools=tool_versions("onnx", "numpy"), family=src.family, quantization=src.quantization,
                 conversion={"from": src.precision, "keep_fp32_ops": sorted(KEEP_FP32), "source_tools": src.tools,
                             "source_sha256": {}})
    for name in names:
        entry, spec = src.components[name], specs[name]
        if spec.fp32_only:
            g = _copy_graph(src_dir, entry, out_dir, name)
        else:
            g = convert_graph(src_dir / entry.file, out_dir, spec, half)
        m.conversion["source_sha256"][name] = source_hash(src_dir, entry)
        m.components[name] = GraphEntry(g.file, g.data_file, g.bytes, spec.precision(half), spec.to_dict(),
                                        round(entry.export_seconds + g.seconds, 2))
        m.write(out_dir)
        if on_done is not None:
            on_done(g)
    return m
