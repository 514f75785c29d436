"""Activation ranges: the largest |x| each quantized layer's input reaches over the recorded feeds.

The fp32 graph runs under ONNX Runtime with the wanted tensors added as outputs (a copy of the graph proto that
points at the same weights), a bounded number of them per run so that memory stays within a budget at real size.
Max calibration (amax) is what TensorRT's explicit quantization and NVIDIA Model Optimizer's default INT8 / FP8
recipes use: no clipping of the rare large activations that diffusion UNets rely on.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .qdq import onnx_module
from .record import Feed

PROBE = 32  # tensors in the first run, which measures their size to choose how many fit the budget


def _session(model, directory: Path, threads: int):
    """An ORT session on `model`; a graph whose weights live in a side file is saved next to it first."""
    import onnxruntime as ort

    onnx = onnx_module()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    if not external:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".amax-", suffix=".onnx") as tmp:
        onnx.save_model(model, tmp.name)
        return ort.InferenceSession(tmp.name, options, providers=["CPUExecutionProvider"])


def activation_amax(graph: Path, tensors: list[str], feeds: list[Feed], budget_bytes: int = 2 << 30,
                    threads: int = 0) -> dict[str, float]:
    """max |x| over all feeds for every named tensor of the graph at `graph` (float tensors)."""
    onnx = onnx_module()
    amax = {t: 0.0 for t in tensors}
    inputs = [t for t in tensors if t in feeds[0]]
    for t in inputs:
        amax[t] = max(float(np.abs(f[t]).max(initial=0.0)) for f in feeds)
    inner = [t for t in tensors if t not in feeds[0]]
    if not inner:
        return amax
    model = onnx.load(str(graph), load_external_data=False)
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                              for t in inner if t not in present)
    session = _session(model, graph.parent, threads)
    start, chunk, largest = 0, min(PROBE, len(inner)), 1
    while start < len(inner):
        names = inner[start:start + chunk]
        for feed in feeds:
            for name, x in zip(names, session.run(names, feed), strict=True):
                amax[name] = max(amax[name], float(np.abs(x).max(initial=0.0)))
                largest = max(largest, x.nbytes)
        start += len(names)
        chunk = max(1, budget_bytes // largest)
    return amax
