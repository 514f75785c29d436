"""An INT8 / FP8 export from an fp32 export: record, calibrate, insert Q/DQ, gate, write (atomically).

The result is a normal export directory (graphs + manifest, same IO specs), so `emo-run --engine-dir` renders
with it through ONNX Runtime and an engine builder reads it like any export. Quantized graphs are marked with
their format in the manifest; the others are the fp32 graphs, copied. `calibration.json` holds every calibrated
activation range with the hashes of the calibration set and of the model.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import RunConfig
from ..errors import InputError
from ..manifest import MANIFEST_FILE, GraphEntry, Manifest, read_manifest, tool_versions
from ..runtime.onnxruntime_backend import REQUIRED, OnnxRuntimeBackend
from .amax import activation_amax
from .gate import DEFAULT_MIN_PSNR_DB, component_error, frame_error, gate_record
from .media_set import MediaPair, check_disjoint, set_hash
from .policy import FORMATS, QuantPolicy
from .qdq import onnx_module, quant_targets, quantize_graph
from .record import Feed, RecordingBackend, Renders, render_pairs

CALIBRATION_FILE = "calibration.json"


class GateFailed(Exception):
    """The quantized export is less accurate than the gate allows (nothing was written)."""


@dataclass(frozen=True)
class CalibrationSettings:
    run: RunConfig  # render settings of the calibration and held-out renders
    seed: int = 0
    min_psnr_db: float = DEFAULT_MIN_PSNR_DB
    accept_accuracy_loss: bool = False
    threads: int = 0
    amax_budget_bytes: int = 2 << 30
    extra: dict = field(default_factory=dict)  # more settings to hash with the set (e.g. seconds per pair)


@dataclass
class Recordings:
    """What the fp32 export does on the calibration and held-out inputs: the feeds of the components to quantize
    (both sets) and the held-out renders the gate compares with. Recorded once, they serve every format."""

    fp32_dir: Path
    components: tuple[str, ...]
    run: RunConfig
    seed: int
    pairs: tuple[tuple[MediaPair, ...], tuple[MediaPair, ...]]  # the calibration and held-out inputs
    calibration: dict[str, list[Feed]]
    held_out: dict[str, list[Feed]]
    reference: Renders

    def matches(self, fp32_dir: Path, components: tuple[str, ...], calibration: list[MediaPair],
                held_out: list[MediaPair], run: RunConfig, seed: int) -> bool:
        return (self.fp32_dir.resolve() == fp32_dir.resolve() and set(components) <= set(self.components)
                and self.pairs == (tuple(calibration), tuple(held_out)) and self.run == run and self.seed == seed)


def record(fp32_dir: str | Path, components: tuple[str, ...], calibration: list[MediaPair],
           held_out: list[MediaPair], settings: CalibrationSettings,
           say: Callable[[str], None] = lambda s: None) -> Recordings:
    """Render both sets with the fp32 graphs, keeping every feed of `components`."""
    fp32_dir = Path(fp32_dir)
    check_disjoint(calibration, held_out)
    say(f"calibration: rendering {len(calibration)} input(s) with the fp32 graphs")
    recorder = RecordingBackend(fp32_dir, components, settings.threads)
    render_pairs(recorder, calibration, settings.run, settings.seed)
    feeds, recorder = recorder.feeds, None  # its sessions go: real-size graphs are large
    say(f"gate: rendering {len(held_out)} held-out input(s) with the fp32 graphs")
    recorder = RecordingBackend(fp32_dir, components, settings.threads)
    reference = render_pairs(recorder, held_out, settings.run, settings.seed)
    return Recordings(fp32_dir, tuple(components), settings.run, settings.seed, (tuple(calibration), tuple(held_out)),
                      feeds, recorder.feeds, reference)


def check_out_dir(out_dir: Path) -> None:
    """Refuse, before any work, an output that could not be written or would destroy something else."""
    parent = out_dir.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output directory's parent is missing or not writable: {parent}")
    if out_dir.exists() and (not out_dir.is_dir() or
                             (any(out_dir.iterdir()) and not (out_dir / MANIFEST_FILE).is_file())):
        raise InputError(f"{out_dir} exists and is not an export directory; choose another --out")


def _copy_graph(entry: GraphEntry, src: Path, dst: Path) -> None:
    for f in (entry.file, entry.data_file):
        if f is not None:
            shutil.copy2(src / f, dst / f)


def _calibrate(fp32_dir: Path, staging: Path, fp32: Manifest, fmt: str, policy: QuantPolicy,
               feeds: dict[str, list], settings: CalibrationSettings, say: Callable[[str], None]) -> dict:
    """Q/DQ graphs of the policy's components and copies of the others into staging -> calibration record."""
    onnx = onnx_module()
    record = {}
    for name, entry in fp32.components.items():
        if name not in policy.components:
            _copy_graph(entry, fp32_dir, staging)
            continue
        src = fp32_dir / entry.file
        targets = quant_targets(onnx.load(str(src), load_external_data=False), policy)
        activations = sorted({t.activation for t in targets})
        amax = activation_amax(src, activations, feeds[name], settings.amax_budget_bytes, settings.threads)
        layers = quantize_graph(src, staging / entry.file, amax, policy, fmt)
        say(f"{name:14s} {layers:5d} layers quantized, {len(activations)} activation ranges from "
            f"{len(feeds[name])} feeds")
        record[name] = {"feeds": len(feeds[name]), "layers": layers, "amax": amax}
    return record


def _manifest(fp32: Manifest, staging: Path, fmt: str, policy: QuantPolicy) -> Manifest:
    components = {}
    for name, e in fp32.components.items():
        quantized = name in policy.components
        data = e.file + ".data" if quantized and (staging / (e.file + ".data")).is_file() else \
            None if quantized else e.data_file
        size = sum((staging / f).stat().st_size for f in (e.file, data) if f)
        components[name] = GraphEntry(e.file, data, size, fmt if quantized else e.precision, e.spec, 0.0)
    return Manifest(format="onnx", precision=fmt, opset=fp32.opset, model_config=fp32.model_config,
                    config_hash=fp32.config_hash, weights_hash=fp32.weights_hash, ranges=fp32.ranges,
                    components=components, tools=fp32.tools | tool_versions("onnx", "onnxruntime"))


def quantize_export(fp32_dir: str | Path, out_dir: str | Path, fmt: str, policy: QuantPolicy,
                    calibration: list[MediaPair], held_out: list[MediaPair], settings: CalibrationSettings,
                    say: Callable[[str], None] = lambda s: None, recordings: Recordings | None = None) -> Manifest:
    """Calibrate on `calibration`, gate on `held_out`, write the `fmt` export to out_dir (replacing an export
    there). Raises GateFailed below the gate unless settings.accept_accuracy_loss; then nothing is written.
    recordings: `record`'s result for these sets and settings (made here when not given)."""
    if fmt not in FORMATS:
        raise InputError(f"precision must be one of {', '.join(FORMATS)} (got {fmt!r})")
    fp32_dir, out_dir = Path(fp32_dir), Path(out_dir)
    check_out_dir(out_dir)
    fp32 = read_manifest(fp32_dir, "onnx", REQUIRED)
    if fp32.precision != "fp32":
        raise InputError(f"{fp32_dir} holds {fp32.precision} graphs; calibration starts from an fp32 export")
    unknown = [c for c in policy.components if c not in fp32.components]
    if unknown:
        raise InputError(f"unknown component(s) to quantize: {', '.join(unknown)}")
    run, seed = settings.run, settings.seed
    run.validate(fp32.model())
    if recordings is None:
        recordings = record(fp32_dir, policy.components, calibration, held_out, settings, say)
    elif not recordings.matches(fp32_dir, policy.components, calibration, held_out, run, seed):
        raise InputError("the recordings were made for another export, inputs, components or settings")
    check_disjoint(calibration, held_out)
    feeds = recordings.calibration

    staging = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        layers = _calibrate(fp32_dir, staging, fp32, fmt, policy, feeds, settings, say)
        hashes = {"calibration_set": set_hash(calibration, {"size": run.size, "steps": run.steps,
                                                            "frames": run.frames, "motion_frames": run.motion_frames,
                                                            "seed": seed, **settings.extra}),
                  "model": f"{fp32.config_hash}:{fp32.weights_hash}"}
        (staging / CALIBRATION_FILE).write_text(json.dumps(
            {"format": fmt, "method": "max", **hashes, "pairs": [p.name for p in calibration],
             "components": layers}, indent=1, sort_keys=True) + "\n")
        manifest = _manifest(fp32, staging, fmt, policy)
        manifest.write(staging)
        del feeds

        say(f"gate: rendering {len(held_out)} held-out input(s) with the {fmt} graphs")
        ref, held_feeds = recordings.reference, recordings.held_out
        got = render_pairs(OnnxRuntimeBackend(staging, "cpu", settings.threads), held_out, run, seed)
        errors = {name: component_error(fp32_dir / fp32.components[name].file, staging / manifest.components[name].file,
                                        held_feeds[name], settings.threads)
                  for name in policy.components}
        gate = gate_record(frame_error(ref.frames, got.frames), errors, settings.min_psnr_db,
                           settings.accept_accuracy_loss, {"fp32": ref.lip_sync_r, fmt: got.lip_sync_r})
        manifest.quantization = {"format": fmt, "policy": policy.to_dict(), "calibration_file": CALIBRATION_FILE,
                                 **hashes, "calibration_pairs": [p.name for p in calibration],
                                 "held_out_pairs": [p.name for p in held_out], "gate": gate}
        manifest.write(staging)
        psnr = gate["frames"]["psnr_db"]
        if not gate["passed"] and not settings.accept_accuracy_loss:
            raise GateFailed(f"{fmt} frames reach {psnr:.1f} dB PSNR vs fp32 on held-out inputs, below the "
                             f"{settings.min_psnr_db:g} dB gate (--accept-accuracy-loss keeps it anyway)")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.replace(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
