"""Small ONNX models with the interfaces of Hallo's face-analysis and vocal-separation models, built in the tests.

- `scrfd_model`: SCRFD's 9 outputs (3 strides x score / box distances / 5 landmarks, 2 anchors a cell) holding
  planted detections, so that the decoded faces are known exactly.
- `arcface_model`: 112x112 RGB -> 512-d vector (an 8x8 average pool and a fixed random projection).
- `mdx_model`: MDX-Net's (1, 4, dim_f, dim_t) spectrogram in -> out, multiplying every frequency bin by a gain.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

STRIDES = (8, 16, 32)


@dataclass
class Planted:
    stride: int
    cell: tuple[int, int]  # x, y
    anchor: int
    score: float
    distances: tuple[float, float, float, float]  # left, top, right, bottom in units of the stride
    kps: tuple[float, ...] = (-2.0, -1.0, 2.0, -1.0, 0.0, 0.5, -1.5, 2.0, 1.5, 2.0)  # in units of the stride

    def centre(self) -> np.ndarray:
        return np.array(self.cell, np.float64) * self.stride

    def box(self) -> np.ndarray:
        """In detector-input pixels."""
        c, d = self.centre(), np.array(self.distances) * self.stride
        return np.array([c[0] - d[0], c[1] - d[1], c[0] + d[2], c[1] + d[3]])

    def points(self) -> np.ndarray:
        return self.centre() + np.array(self.kps).reshape(5, 2) * self.stride


def _save(graph, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _input_zero(nodes: list, name: str) -> str:
    """A scalar 0 computed from the image, so every output depends on the input."""
    from onnx import helper

    nodes += [helper.make_node("ReduceMean", [name], ["mean"], keepdims=0),
              helper.make_node("Mul", ["mean", "zero"], ["dep"])]
    return "dep"


def scrfd_model(path: Path, planted: list[Planted], size: int = 640, batched: bool = False) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    nodes: list = []
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    dep = _input_zero(nodes, "input.1")
    outputs = []
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for s in STRIDES:
            cells = (size // s) ** 2 * 2
            value = np.zeros((cells, width), np.float32)
            for p in planted:
                if p.stride == s:
                    row = (p.cell[1] * (size // s) + p.cell[0]) * 2 + p.anchor
                    value[row] = {"score": [p.score], "bbox": p.distances, "kps": p.kps}[kind]
            if batched:
                value = value[None]
            name = f"{kind}_{s}"
            inits.append(numpy_helper.from_array(value, f"{name}_c"))
            nodes.append(helper.make_node("Add", [f"{name}_c", dep], [name]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(nodes, "scrfd_test", [helper.make_tensor_value_info(
        "input.1", TensorProto.FLOAT, [1, 3, size, size])], outputs, inits)
    return _save(graph, path)


def arcface_projection(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((3 * 14 * 14, 512)).astype(np.float32) / 20


def arcface_model(path: Path, side: int = 112, normalise_inside: bool = False, seed: int = 0) -> Path:
    """pool8(x) flattened @ projection -> (1, 512); with normalise_inside, (x - 127.5) * (1/127.5) first (Sub, Mul
    named as InsightFace looks for them)."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(arcface_projection(seed), "proj"),
             numpy_helper.from_array(np.array([1, -1], np.int64), "flat")]
    nodes, x = [], "input.1"
    if normalise_inside:
        inits += [numpy_helper.from_array(np.array(127.5, np.float32), "mean"),
                  numpy_helper.from_array(np.array(1 / 127.5, np.float32), "inv_std")]
        nodes += [helper.make_node("Sub", [x, "mean"], ["centred"], name="Sub_0"),
                  helper.make_node("Mul", ["centred", "inv_std"], ["normed"], name="Mul_1")]
        x = "normed"
    nodes += [helper.make_node("AveragePool", [x], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
              helper.make_node("Reshape", ["pooled", "flat"], ["flat_x"]),
              helper.make_node("MatMul", ["flat_x", "proj"], ["683"])]
    graph = helper.make_graph(nodes, "arcface_test", [helper.make_tensor_value_info(
        "input.1", TensorProto.FLOAT, [1, 3, side, side])], [helper.make_tensor_value_info(
            "683", TensorProto.FLOAT, [1, 512])], inits)
    return _save(graph, path)


def attribute_model(path: Path) -> Path:
    """A 96x96 gender/age-style model (3 outputs): present in Hallo's directory, unused by the runtime."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array([1, -1], np.int64), "flat"),
             numpy_helper.from_array(np.ones((3 * 96 * 96, 3), np.float32), "w")]
    nodes = [helper.make_node("Reshape", ["data", "flat"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["fc1"])]
    graph = helper.make_graph(nodes, "attr_test", [helper.make_tensor_value_info(
        "data", TensorProto.FLOAT, [1, 3, 96, 96])], [helper.make_tensor_value_info(
            "fc1", TensorProto.FLOAT, [1, 3])], inits)
    return _save(graph, path)


def mdx_model(path: Path, gains: np.ndarray, dim_t: int) -> Path:
    """(batch, 4, dim_f, dim_t) -> the same with bin f scaled by gains[f] (a fixed spectral mask)."""
    from onnx import TensorProto, helper, numpy_helper

    dim_f = len(gains)
    inits = [numpy_helper.from_array(np.asarray(gains, np.float32).reshape(1, 1, dim_f, 1), "gain")]
    nodes = [helper.make_node("Mul", ["input", "gain"], ["output"])]
    graph = helper.make_graph(nodes, "mdx_test", [helper.make_tensor_value_info(
        "input", TensorProto.FLOAT, ["batch", 4, dim_f, dim_t])], [helper.make_tensor_value_info(
            "output", TensorProto.FLOAT, ["batch", 4, dim_f, dim_t])], inits)
    return _save(graph, path)
