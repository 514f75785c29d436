"""Compare each exported graph, run by ONNX Runtime through polygraphy, with the torch module it came from.

Both sides get the same inputs (example inputs at a given operating point); the torch side always runs in float32,
so for fp16 graphs the numbers are the full fp16 error. Usable on any export: `emo-verify ENGINE_DIR --models DIR`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoints.model_dir import Models
from ..errors import InputError
from ..geometry import size_unit
from ..io_spec import component_specs, dim_values, trace_values
from ..manifest import read_manifest
from .graphs import component_module
from .inputs import example_inputs

DEFAULT_TOLERANCE = {"fp32": 1e-4, "fp16": 5e-2}  # max abs error, on outputs of order 1
# Components whose outputs are made from ReferenceNet records rounded to float16 (`as_recorded`, as the reference
# code does): a record that ONNX Runtime's float32 arithmetic puts on the other side of a float16 rounding boundary
# than torch's moves by one float16 ulp, so in float32 these are compared to within one ulp at the output's scale.
FP16_ROUNDED = ("reference", "motion")


def _tolerance(name: str, precision: str, max_ref: float, given: float | None) -> float:
    if given is not None:
        return given
    if precision == "fp32" and name in FP16_ROUNDED:
        return max(DEFAULT_TOLERANCE["fp32"], max_ref * 2.0 ** -10)
    return DEFAULT_TOLERANCE[precision]


@dataclass(frozen=True)
class Comparison:
    component: str
    point: str  # which operating point
    precision: str
    max_abs: float  # over all outputs
    max_ref: float  # largest |torch output|, for scale
    worst_output: str
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.tolerance


def _runner(path: Path, providers: list[str]):
    try:
        from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
        from polygraphy.logger import G_LOGGER
    except ImportError:
        raise RuntimeError("emo-verify needs polygraphy: pip install 'emo-runtime[export]'") from None
    G_LOGGER.module_severity = G_LOGGER.ERROR
    return OnnxrtRunner(SessionFromOnnx(str(path), providers=providers))


def operating_points(manifest) -> dict[str, dict[str, int]]:
    """The trace point (small) and a second point with other frames, motion frames and size than the trace, and
    one batch row (the denoiser's conditional-only step, a single imageproj row)."""
    cfg, r = manifest.model(), manifest.shape_ranges()
    trace = trace_values(cfg, r)
    size = min(trace["pix"] + size_unit(cfg), r.size[2])
    other = dim_values(cfg, r, min(trace["frames"] + 2, r.frames[2]), min(trace["motion"] + 1, r.motion_frames[2]),
                       size, 1.3, min(trace["images"] + 1, max(r.frames[2], 1)), batch=1)
    return {"trace": trace, "other": other}


@torch.no_grad()
def verify_export(export_dir: str | Path, models: Models, components: tuple[str, ...] | None = None,
                  tolerance: float | None = None, providers: tuple[str, ...] = ("CPUExecutionProvider",)
                  ) -> list[Comparison]:
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir, "onnx")
    if manifest.precision == "bf16":
        raise InputError(f"{export_dir} holds bf16 graphs: ONNX Runtime, which runs the comparison, has no bf16 "
                         f"kernels on the CPU (compare the fp32 export, or the TensorRT plans on a GPU)")
    if models.cfg.config_hash() != manifest.config_hash:
        raise ValueError(f"{export_dir} was exported from another model config than the one given")
    specs = component_specs(manifest.model(), manifest.shape_ranges())
    models.net.float()
    models.vae.float()
    results = []
    for name in components or tuple(manifest.components):
        entry = manifest.components[name]
        spec, prec = specs[name], entry.precision
        module = component_module(name, models.cfg, models.net, models.vae, models.audio_encoder, spec)
        with _runner(export_dir / entry.file, list(providers)) as runner:
            for point, values in operating_points(manifest).items():
                inputs = example_inputs(spec, values, "fp32", seed=1)
                ref = module(*inputs.values())
                ref = ref if isinstance(ref, tuple) else (ref,)
                feed = {t.name: inputs[t.name].numpy().astype(t.numpy_dtype(prec)) for t in spec.inputs}
                got = runner.infer(feed)
                errs = {t.name: float(np.abs(got[t.name].astype(np.float32) - r.float().numpy()).max(initial=0))
                        for t, r in zip(spec.outputs, ref, strict=True)}
                worst = max(errs, key=errs.get)
                max_ref = max(float(r.abs().max()) if r.numel() else 0.0 for r in ref)
                results.append(Comparison(name, point, prec, errs[worst], max_ref, worst,
                                          _tolerance(name, prec, max_ref, tolerance)))
    return results
