"""Refitting: new weights of the same model written into refittable plans, without a rebuild.

Both flavours support it: plans built with the REFIT builder flag (`--refittable`), then TensorRT's Refitter fed
by its ONNX refitter from the new export. The refitter works on a deserialized engine, so this runs on a machine
with a GPU the plans target (TensorRT for RTX builds without one, but cannot refit without one).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import InputError
from ..manifest import Manifest, file_sha256, read_manifest
from ..tensorrt.flavours import collecting_logger
from ..tensorrt.plan_dir import plan_module
from .builder import BuildError


def check_refit(source: Manifest, target: Manifest, plan_dir: Path) -> None:
    """Refuse what refitting cannot do: plans built without REFIT, another model, another graph precision."""
    engine = target.engine or {}
    if not engine.get("refittable"):
        raise InputError(f"{plan_dir} was built without --refittable: rebuild it (emo-build-engine --refittable)")
    if source.config_hash != target.config_hash:
        raise InputError(f"the export is of another model config than {plan_dir}: refitting takes new weights of "
                         f"the same model; build new plans instead")
    if source.precision != engine.get("source_precision"):
        raise InputError(f"the export is {source.precision}, {plan_dir} was built from a "
                         f"{engine.get('source_precision')} export")
    missing = [c for c in target.components if c not in source.components]
    if missing:
        raise InputError(f"the export lacks {', '.join(missing)}, which {plan_dir} holds")


def refit_engine_dir(export_dir: str | Path, plan_dir: str | Path,
                     on_done: Callable[[str], None] | None = None) -> Manifest:
    """The plans of a plan directory refitted with the weights of an export directory of the same model."""
    export_dir, plan_dir = Path(export_dir), Path(plan_dir)
    source = read_manifest(export_dir, "onnx")
    target = read_manifest(plan_dir, "tensorrt")
    check_refit(source, target, plan_dir)
    trt = plan_module(target, plan_dir)  # the flavour and version the plans were built with
    import torch

    if not torch.cuda.is_available():
        raise InputError("refitting deserializes the plans, which needs a CUDA GPU they target; none is visible here")
    errors: list[str] = []
    logger = collecting_logger(trt, errors)
    runtime = trt.Runtime(logger)
    for name, entry in target.components.items():
        src = source.components[name]
        graph = export_dir / src.file
        plan = plan_dir / entry.file
        engine = runtime.deserialize_cuda_engine(plan.read_bytes())
        if engine is None:
            raise BuildError(f"{name}: cannot load {plan}: {errors[-1] if errors else 'no reason given'}")
        refitter = trt.Refitter(engine, logger)
        if not trt.OnnxParserRefitter(refitter, logger).refit_from_file(str(graph)) or \
                not refitter.refit_cuda_engine():
            raise BuildError(f"{name}: TensorRT could not refit from {graph.name}: "
                             f"{errors[-1] if errors else 'no reason given'}")
        tmp = plan_dir / f".{name}.plan.tmp"
        try:
            tmp.write_bytes(engine.serialize())
            tmp.replace(plan)
        finally:
            tmp.unlink(missing_ok=True)
        entry.bytes, entry.sha256 = plan.stat().st_size, file_sha256(plan)
        entry.source_sha256 = file_sha256(graph, *([export_dir / src.data_file] if src.data_file else []))
        target.write(plan_dir)  # plan hashes stay true for the runtime's check, even if interrupted
        if on_done is not None:
            on_done(name)
    target.weights_hash = source.weights_hash
    target.write(plan_dir)
    return target
