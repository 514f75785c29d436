"""Export a loaded model, component by component, into an ONNX export directory with its manifest."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import torch

from ..checkpoints.model_dir import Models
from ..checkpoints.state_dict import weights_hash
from ..config import ShapeRanges
from ..errors import InputError
from ..io_spec import component_names, component_specs, default_ranges, echomimic_audio_encoder, trace_values
from ..manifest import MANIFEST_FILE, EngineDirError, GraphEntry, Manifest, read_manifest, tool_versions
from .graphs import component_module
from .half import KEEP_FP32, convert_graph
from .onnx_export import OPSET, ExportedGraph, export_component

PRECISIONS = ("fp32", "fp16", "bf16")


def _start_manifest(models: Models, out_dir: Path, precision: str, ranges: ShapeRanges, weights: str) -> Manifest:
    """A fresh manifest, or the existing one when the directory already holds graphs of the same model."""
    fresh = Manifest(format="onnx", precision=precision, opset=OPSET, model_config=models.cfg.to_dict(),
                     config_hash=models.cfg.config_hash(), weights_hash=weights, ranges=ranges.to_dict(),
                     tools=tool_versions("torch", "onnx", "onnxruntime", "transformers"),
                     family=getattr(models, "family", "hallo"),
                     conversion={} if precision == "fp32" else {"from": "fp32", "keep_fp32_ops": sorted(KEEP_FP32)})
    if not (out_dir / MANIFEST_FILE).is_file():
        return fresh
    try:
        old = read_manifest(out_dir, "onnx")
    except EngineDirError:
        return fresh
    # ranges compared as ShapeRanges: read back from JSON they hold lists, a fresh one tuples
    same = (old.config_hash, old.weights_hash, old.precision, old.shape_ranges(), old.family) == \
        (fresh.config_hash, fresh.weights_hash, fresh.precision, ranges, fresh.family)
    if same:
        fresh.components = old.components
    return fresh


def export_models(models: Models, out_dir: str | Path, precision: str = "fp32", ranges: ShapeRanges | None = None,
                  components: tuple[str, ...] | None = None,
                  on_done: Callable[[ExportedGraph], None] | None = None) -> Manifest:
    """Write `<component>.onnx` for each requested component and the manifest (rewritten after each graph, so an
    interrupted export leaves a valid directory with the graphs done so far).

    Exporting into a directory that holds graphs of the same model, weights, precision and ranges adds to it;
    otherwise its manifest is replaced. Graphs are always traced in float32 (the models are put in float32 on the
    CPU); an fp16 export converts each traced graph (`half.convert_graph`), which is exact to float16 rounding and
    takes seconds where tracing in float16 on a CPU takes hours at real size. `models`: a Hallo model (Models) or
    an EchoMimic one (EchoMimicModels); components: default all of its family's.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    known = component_names(models.cfg)
    components = known if components is None else components
    unknown = [c for c in components if c not in known]
    if unknown:
        raise ValueError(f"unknown component(s) {', '.join(unknown)} (choose from {', '.join(known)})")
    if models.cfg.family == "echomimic" and models.audio_encoder.cfg != echomimic_audio_encoder(models.cfg):
        raise InputError(f"EchoMimic exports take a whisper-tiny encoder ({echomimic_audio_encoder(models.cfg)}), "
                         f"not {models.audio_encoder.cfg}")
    ranges = ranges or default_ranges(models.cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = _start_manifest(models, out_dir, precision, ranges,
                               weights_hash(models.net, models.vae, models.audio_encoder))
    specs = component_specs(models.cfg, ranges)
    values = trace_values(models.cfg, ranges)
    for m in (models.net, models.vae, models.audio_encoder):
        m.to(torch.device("cpu"), torch.float32)
    for name in components:
        spec = specs[name]
        module = component_module(name, models.cfg, models.net, models.vae, models.audio_encoder, spec)
        graph = _export_one(module, spec, values, spec.precision(precision), out_dir)
        manifest.components[name] = GraphEntry(graph.file, graph.data_file, graph.bytes, spec.precision(precision),
                                               spec.to_dict(), round(graph.seconds, 2))
        manifest.write(out_dir)
        if on_done is not None:
            on_done(graph)
    return manifest



def _export_one(module, spec, values: dict[str, int], precision: str, out_dir: Path) -> ExportedGraph:
    """Trace in float32; for a half-precision graph, trace into a scratch directory and convert from there."""
    if precision == "fp32":
        return export_component(module, spec, values, "fp32", out_dir)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{spec.name}-fp32-") as tmp:
        traced = export_component(module, spec, values, "fp32", Path(tmp))
        g = convert_graph(Path(tmp) / traced.file, out_dir, spec, precision)
    return ExportedGraph(spec.name, g.file, g.data_file, g.bytes, traced.seconds + g.seconds)
