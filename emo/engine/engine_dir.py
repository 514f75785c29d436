"""emo-build-engine's work: each requested component of an ONNX export directory built into one plan, and the
plan directory's manifest (what was built, from which graphs, for which flavour, version and GPUs).

Each plan is built in a child process of its own: the builder's memory goes back to the system between components,
peak memory is measured per component, and a builder that crashes or runs out of memory is reported by component.
"""
from __future__ import annotations

import pickle
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..errors import InputError
from ..io_spec import component_names, component_specs
from ..manifest import MANIFEST_FILE, EngineDirError, GraphEntry, Manifest, file_sha256, read_manifest, tool_versions
from ..tensorrt.flavours import Flavour, import_flavour, resolve_flavour, sm_name
from .build_ranges import Span, build_ranges
from .builder import BuildError, BuildOptions
from .memory import available_gib, plan_memory
from .precision import network_typing, quantized_types
from .profiles import Point, component_profiles, default_point

RTX_DEFAULT_EXCLUDES = (75,)  # Turing has no fp32 GEMM in TensorRT for RTX: only on request


@dataclass(frozen=True)
class EngineSettings:
    flavour: str = "auto"
    precision: str | None = None  # None: the export's own precision
    targets: tuple[int, ...] = ()  # () = the flavour's default
    points: tuple[Point, ...] = ()  # opt points of the profiles; () = the export's opt point
    optimization_level: int = 3
    workspace_gib: float | None = None  # cap on the engine's device memory (TensorRT's pool); None: its default
    refittable: bool = False
    frames: Span | None = None  # clip lengths the profiles cover; None: up to the run preset's (`build_ranges`)
    size: Span | None = None  # frame sizes the profiles cover; None: the run preset's
    full_range: bool = False  # profiles over every shape the export allows
    max_memory_gib: float | None = None  # memory budget of a build; None: what is available when it starts


@dataclass(frozen=True)
class BuiltPlan:
    name: str
    file: str
    bytes: int
    seconds: float
    peak_rss_mib: float


def _build_in_child(module: str, component: str, out_dir: Path, **job) -> dict:
    """Run builder.build_plan in a fresh interpreter (emo.engine.child); its errors come back as they were raised."""
    result_file = out_dir / f".{component}.result"
    try:
        proc = subprocess.run([sys.executable, "-m", "emo.engine.child", str(result_file)],
                              input=pickle.dumps(dict(job, module=module, component=component)))
        if not result_file.is_file():
            how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
                   else f"exit code {proc.returncode}")
            raise BuildError(f"{component}: the TensorRT builder process died ({how}; out of memory?)")
        status, value = pickle.loads(result_file.read_bytes())
    finally:
        result_file.unlink(missing_ok=True)
    if status == "error":
        raise value
    return value


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def build_targets(flavour: Flavour, requested: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], str | None]:
    """-> (compute capabilities to give the builder, the ones the engine runs on, the build GPU's name)."""
    if flavour.aot_targets:
        chosen = requested or tuple(c for c in flavour.aot_targets if c not in RTX_DEFAULT_EXCLUDES)
        bad = [sm_name(c) for c in chosen if c not in flavour.aot_targets]
        if bad:
            raise InputError(f"{flavour.name} cannot build for {', '.join(bad)}; it targets "
                             f"{', '.join(sm_name(c) for c in flavour.aot_targets)}"
                             + (" (for sm_90 build with classic TensorRT on that GPU)" if "sm_90" in bad else ""))
        return chosen, chosen, None
    import torch

    if not _cuda_available():
        raise InputError(f"{flavour.name} builds on the GPU it targets and no CUDA GPU is visible here "
                         f"(for RTX GPUs, build ahead of time with --flavour tensorrt-rtx)")
    major, minor = torch.cuda.get_device_capability()
    here = major * 10 + minor
    if requested and requested != (here,):
        raise InputError(f"{flavour.name} builds for the GPU it runs on ({sm_name(here)} here), not "
                         f"{', '.join(sm_name(c) for c in requested)}")
    return (), (here,), torch.cuda.get_device_name()


def _start_manifest(out_dir: Path, source: Manifest, precision: str, engine: dict, tools: dict,
                    ranges: dict) -> Manifest:
    """A fresh manifest, or the existing one's components when it was built the same way from the same export."""
    fresh = Manifest(format="tensorrt", precision=precision, opset=source.opset, model_config=source.model_config,
                     config_hash=source.config_hash, weights_hash=source.weights_hash, ranges=ranges,
                     tools=tools, engine=engine, family=source.family)
    if not (out_dir / MANIFEST_FILE).is_file():
        return fresh
    try:
        old = read_manifest(out_dir, "tensorrt")
    except EngineDirError:
        return fresh
    def how(m: Manifest) -> tuple:
        return (m.config_hash, m.weights_hash, m.precision, m.shape_ranges(),  # lists from JSON, tuples here
                {k: v for k, v in (m.engine or {}).items() if k != "built_at"})

    if how(old) == how(fresh):
        fresh.components = old.components
    return fresh


def build_engine_dir(export_dir: str | Path, out_dir: str | Path, settings: EngineSettings = EngineSettings(),
                     components: tuple[str, ...] | None = None, on_done: Callable[[BuiltPlan], None] | None = None,
                     echo: bool = False) -> Manifest:
    """Build `<component>.plan` for each requested component and write the manifest after each (an interrupted
    build leaves a valid directory with the plans done so far). Building into a directory made the same way from
    the same export adds to it; otherwise its manifest is replaced."""
    import onnx

    export_dir, out_dir = Path(export_dir), Path(out_dir)
    if components is None:  # every component of the export's model family
        components = component_names(read_manifest(export_dir, "onnx").model())
    source = read_manifest(export_dir, "onnx", components)
    if out_dir.resolve() == export_dir.resolve():
        raise InputError("--out must be another directory than the export (each has its own manifest.json)")
    flavour = resolve_flavour(settings.flavour)
    trt = import_flavour(flavour)
    options_targets, targets, gpu = build_targets(flavour, settings.targets)
    if settings.refittable and flavour.aot_targets and gpu is None and not _cuda_available():
        raise InputError(f"{flavour.name} compiles refittable plans with the GPU's JIT (its CUDA check fails "
                         f"here): build --refittable on a machine with a GPU, or without --refittable")
    cfg = source.model()
    ranges = build_ranges(cfg, source.shape_ranges(), settings.frames, settings.size, settings.full_range)
    specs = component_specs(cfg, ranges)
    budget = settings.max_memory_gib if settings.max_memory_gib is not None else available_gib()
    points = [default_point(ranges)] + [p for p in settings.points if p != default_point(ranges)]
    # TensorRT for RTX captures an enqueue in a CUDA graph only from a plan that takes all its memory from the
    # runtime (which the tensorrt backend gives every context): set wherever the flavour has the flag
    user_allocation = hasattr(trt.BuilderFlag, "REQUIRE_USER_ALLOCATION")
    options = BuildOptions(options_targets, settings.optimization_level, settings.workspace_gib, settings.refittable,
                           user_allocation)
    engine = {"flavour": flavour.name, "version": trt.__version__, "targets": [sm_name(c) for c in targets],
              "gpu": gpu, "optimization_level": settings.optimization_level, "refittable": settings.refittable,
              "workspace_gib": settings.workspace_gib, "user_allocation": user_allocation,
              "opt_points": [list(p) for p in points],
              "source_precision": source.precision, "export_ranges": source.ranges,
              "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    manifest = _start_manifest(out_dir, source, settings.precision or source.precision, engine,
                               tool_versions("onnx") | {flavour.name: trt.__version__}, ranges.to_dict())
    jobs = []
    for name in components:  # check everything a build needs before the first (slow) build starts
        entry, spec = source.components[name], specs[name]
        graph = export_dir / entry.file
        model = onnx.load(str(graph), load_external_data=False)  # read once, here: node count and Q/DQ types
        requested = None if spec.fp32_only else settings.precision
        quantized = quantized_types(model) if requested in ("int8", "fp8") else Counter()
        typing = network_typing(trt, name, entry.precision, requested, quantized)
        try:
            profiles = component_profiles(cfg, ranges, spec, points)
        except ValueError as e:
            raise InputError(str(e)) from None
        source_files = [graph] + ([export_dir / entry.data_file] if entry.data_file else [])
        memory = plan_memory(name, sum(f.stat().st_size for f in source_files), len(model.graph.node), budget)
        del model
        jobs.append((name, entry, spec, graph, typing, profiles, source_files, memory))
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, entry, spec, graph, typing, profiles, source_files, memory in jobs:
        plan = out_dir / f"{name}.plan"
        tmp = out_dir / f".{name}.plan.tmp"
        try:
            result = _build_in_child(flavour.module, name, out_dir, onnx_path=graph, spec=spec, profiles=profiles,
                                     typing=typing, options=options, out_path=tmp, echo=echo)
            tmp.replace(plan)
        finally:
            tmp.unlink(missing_ok=True)
        manifest.components[name] = GraphEntry(
            plan.name, None, plan.stat().st_size, typing.precision, spec.to_dict(), entry.export_seconds,
            sha256=file_sha256(plan), source_sha256=file_sha256(*source_files),
            profiles=[p.to_dict() for p in profiles], network_io=result["network_io"],
            build={"seconds": result["seconds"], "peak_rss_mib": result["peak_rss_mib"],
                   "strongly_typed": typing.strongly_typed, "flags": list(typing.flags), "memory": memory.to_dict()})
        manifest.write(out_dir)
        if on_done is not None:
            on_done(BuiltPlan(name, plan.name, plan.stat().st_size, result["seconds"], result["peak_rss_mib"]))
    return manifest
