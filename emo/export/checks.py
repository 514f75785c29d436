"""Graph hygiene for TensorRT: opset, onnx.checker, shape inference, and an allow-list of op types."""
from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

MIN_OPSET = 17

# Standard-domain ops that TensorRT 10's ONNX parser imports (onnx-tensorrt's operator support list), restricted
# to the ones a diffusion UNet, a VAE and wav2vec2 can reasonably need. Control flow (If/Loop/Scan), sequences,
# custom domains and data-dependent shapes (NonZero, Unique) are left out on purpose.
TRT10_OPS = frozenset("""
Abs Add And ArgMax ArgMin AveragePool BatchNormalization Cast Ceil Clip Concat Constant ConstantOfShape Conv
ConvTranspose Cos CumSum DepthToSpace Div Einsum Equal Erf Exp Expand Flatten Floor Gather GatherElements GatherND
Gelu Gemm GlobalAveragePool Greater GreaterOrEqual GroupNormalization HardSigmoid Identity InstanceNormalization
LayerNormalization LeakyRelu Less LessOrEqual Log MatMul Max MaxPool Min Mod Mul Neg Not OneHot Or Pad Pow Range
Reciprocal ReduceMax ReduceMean ReduceMin ReduceSum Relu Reshape Resize Round ScatterElements ScatterND Shape
Sigmoid Sign Sin Slice Softmax Split Sqrt Squeeze Sub Tanh Tile Transpose Unsqueeze Where
""".split())


QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})  # INT8/FP8 graphs (emo-calibrate): explicit quantization


@dataclass
class GraphReport:
    path: Path
    opset: int
    ops: Counter
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_graph(path: str | Path, allowed: frozenset[str] = TRT10_OPS) -> GraphReport:
    """Run every check on one .onnx file (external data next to it is fine) and collect the problems."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    ops = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
                  for n in model.graph.node)
    report = GraphReport(path, opset, ops)
    if opset < MIN_OPSET:
        report.problems.append(f"opset {opset} < {MIN_OPSET}")
    outside = sorted(op for op in ops if op not in allowed)
    if outside:
        report.problems.append(f"ops outside the TensorRT allow-list: {', '.join(outside)}")
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except onnx.checker.ValidationError as e:
        report.problems.append(f"onnx.checker: {str(e).splitlines()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            onnx.shape_inference.infer_shapes_path(str(path), str(Path(tmp) / "inferred.onnx"), strict_mode=True)
        except Exception as e:  # onnx raises InferenceError or RuntimeError depending on version
            report.problems.append(f"shape inference: {str(e).splitlines()[0]}")
    return report
