"""Linear layers (and 1x1 convolutions, which are linear layers over channels) in FP8 E4M3.

Symmetric, zero point 0, as TensorRT's explicit quantization and emo-calibrate's Q/DQ graphs do: the activation
with one static scale (its calibrated amax / 448), the weight with one scale per output channel (or one per
tensor). The product runs in `torch._scaled_mm` on GPUs with FP8 tensor cores (compute capability 8.9: Ada, 9.0:
Hopper, and later); everywhere else the same quantized operands are dequantized and multiplied in float32
(`emulate=True`), which is how the CPU tests check the arithmetic.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

E4M3_MAX = 448.0  # largest finite float8_e4m3fn
E4M3_EPS = 2.0 ** -3  # spacing of E4M3 values in [1, 2): 3 mantissa bits, so rounding moves a value by <= 1/16
FP8_CAPABILITY = (8, 9)


def fp8_capable(device: torch.device | str) -> bool:
    """Whether `device` multiplies FP8 on tensor cores (CUDA, compute capability >= 8.9)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= FP8_CAPABILITY


def fp8_refusal(device: torch.device | str) -> str | None:
    """Why `device` cannot run FP8 matmuls, in one line (None when it can)."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"FP8 matmuls need a CUDA GPU with compute capability >= 8.9 (Ada, Hopper); this is the {device.type}"
    if not torch.cuda.is_available():
        return "FP8 matmuls need a CUDA GPU with compute capability >= 8.9, and none is available"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < FP8_CAPABILITY:
        return (f"FP8 matmuls need compute capability >= 8.9 (Ada, Hopper); {torch.cuda.get_device_name(device)} "
                f"is {major}.{minor} (use fp16 or bf16)")
    return None


def quantize_e4m3(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x / scale, saturated to ±448 and rounded to float8_e4m3fn (scale broadcasts against x)."""
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


def weight_scales(weight: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """(out, in) weight -> its scales: (out,) per output channel, or () per tensor; amax / 448, never 0."""
    amax = weight.detach().float().abs().amax(dim=1) if per_channel else weight.detach().float().abs().max()
    return amax.clamp_min(1e-12) / E4M3_MAX


class Fp8Linear(nn.Module):
    """y = x Wᵀ + b with x and W in E4M3: W quantized once here, x on the fly with its static scale."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, input_amax: float, per_channel: bool = True,
                 emulate: bool = False):
        super().__init__()
        w_scale = weight_scales(weight, per_channel)
        self.register_buffer("weight_fp8", quantize_e4m3(weight, w_scale[:, None] if per_channel else w_scale))
        self.register_buffer("weight_scale", w_scale)
        self.register_buffer("input_scale", torch.tensor(max(input_amax, 1e-12) / E4M3_MAX, device=weight.device))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.emulate = emulate

    @classmethod
    def from_linear(cls, linear: nn.Linear, input_amax: float, per_channel: bool = True,
                    emulate: bool = False) -> "Fp8Linear":
        return cls(linear.weight, linear.bias, input_amax, per_channel, emulate)

    @classmethod
    def concatenated(cls, layers: tuple["Fp8Linear", ...]) -> "Fp8Linear":
        """One layer computing the outputs of `layers` (same input, same input scale) side by side: their FP8
        weights stacked as they are (no requantization), per-tensor weight scales spread over their rows."""
        first = layers[0]
        if any(type(m) is not Fp8Linear or m.in_features != first.in_features or m.emulate != first.emulate
               or not torch.equal(m.input_scale, first.input_scale) for m in layers):
            raise ValueError("only FP8 linear layers with the same input width, input scale and mode concatenate")
        fused = cls.__new__(cls)
        nn.Module.__init__(fused)
        scales = [m.weight_scale.expand(m.out_features) if m.weight_scale.dim() == 0 else m.weight_scale
                  for m in layers]
        fused.register_buffer("weight_fp8", torch.cat([m.weight_fp8 for m in layers]))
        fused.register_buffer("weight_scale", torch.cat(scales))
        fused.register_buffer("input_scale", first.input_scale.clone())
        biases = [m.bias if m.bias is not None else None for m in layers]
        fused.register_buffer("bias", None if all(b is None for b in biases) else torch.cat(
            [b if b is not None else torch.zeros(m.out_features, device=m.weight_fp8.device)
             for b, m in zip(biases, layers, strict=True)]))
        fused.in_features, fused.out_features = first.in_features, sum(m.out_features for m in layers)
        fused.emulate = first.emulate
        return fused

    def dequantized_weight(self) -> torch.Tensor:
        scale = self.weight_scale[:, None] if self.weight_scale.dim() else self.weight_scale
        return self.weight_fp8.float() * scale  # (out, in) float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # ... c -> (...) c
        xq = quantize_e4m3(x2, self.input_scale)
        y = self._emulated(xq) if self.emulate else self._scaled_mm(xq, x.dtype)
        return y.to(x.dtype).reshape(*lead, self.out_features)  # (...) o -> ... o

    def _emulated(self, xq: torch.Tensor) -> torch.Tensor:
        y = (xq.float() * self.input_scale) @ self.dequantized_weight().t()
        return y if self.bias is None else y + self.bias.float()

    def _scaled_mm(self, xq: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The FP8 tensor-core GEMM: per-tensor scales in `dtype`, per-channel (row-wise) scales in bf16, the only
        output row-wise scaling supports. GPU only; not measured yet."""
        w = self.weight_fp8.t()  # (in, out), column-major as _scaled_mm wants its second operand
        if self.weight_scale.dim() == 0:
            return torch._scaled_mm(xq, w, scale_a=self.input_scale.float(), scale_b=self.weight_scale.float(),
                                    bias=None if self.bias is None else self.bias.to(dtype), out_dtype=dtype)
        scale_a = self.input_scale.float().expand(xq.shape[0], 1).contiguous()  # (m, 1)
        y = torch._scaled_mm(xq, w, scale_a=scale_a, scale_b=self.weight_scale.float()[None], out_dtype=torch.bfloat16)
        return y if self.bias is None else y + self.bias.to(y.dtype)


class Fp8Conv1x1(Fp8Linear):
    """A 1x1 convolution (no groups, stride 1, no padding) as an FP8 linear layer over its channels."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, input_amax: float, per_channel: bool = True,
                  emulate: bool = False) -> "Fp8Conv1x1":
        return cls(conv.weight.flatten(1), conv.bias, input_amax, per_channel, emulate)  # o i 1 1 -> o i

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x.permute(0, 2, 3, 1))  # b c h w -> b h w c -> b h w o
        return y.permute(0, 3, 1, 2)  # b h w o -> b o h w


def is_pointwise(conv: nn.Module) -> bool:
    """A plain 1x1 convolution: one linear layer over channels at every position."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1)


def quantizable(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(qualified name, layer) of every Linear and plain 1x1 Conv2d under `module`."""
    for name, m in module.named_modules():
        if type(m) is nn.Linear or is_pointwise(m):
            yield name, m

