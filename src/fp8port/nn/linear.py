"""FP8Linear: a linear layer that holds block-scaled codes and scales, not dense weights.

Two modes:
  weight-only  y = x W^T with W's codes decoded on the fly (how FP8 checkpoints run on chips
               without FP8 units: Ascend 910B/C, A100, CPUs). On the CPU the fused kernels run it
               (nn/fused.py: no dense copy of W; equal to the dequantized layer up to float32
               reassociation); elsewhere, or for what they do not take, W is dequantized into the
               input's dtype for a dense GEMM (exact bf16 weights for power-of-two scales).
  w8a8         activations are quantized with the preset's activation scheme (1x128 for
               DeepSeek), then the block-scaled GEMM multiplies codes with both scales, as FP8
               hardware does (on the CPU: the quantized activations through the fused kernels).
Resident memory is that of the codes (one byte per element; FP4 and FP6 packed) plus one
float32 scale per block.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..codec.packing import pack, unpack
from ..errors import ShapeError
from ..names import NamedEnum
from ..quant import QuantizedTensor, Role, Scheme, dequantize, get_preset, quantize
from ..quant.api import resolve_scheme
from ..quant.tensor import Framework
from . import fused
from .gemm import check_operands, scaled_matmul


class Mode(NamedEnum):
    __label__ = "mode"
    WEIGHT_ONLY = "weight-only"
    W8A8 = "w8a8"


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


class FP8Linear(nn.Module):
    """y = x W^T + b with W held as block-scaled codes (see the module docstring)."""

    def __init__(
        self,
        codes: torch.Tensor,
        scale_fp32: torch.Tensor,
        scheme: Scheme,
        bias=None,
        mode="weight-only",
        activation: Scheme | None = None,
    ):
        super().__init__()
        if codes.dim() != 2:
            raise ShapeError(f"FP8Linear needs a 2-D weight; got {list(codes.shape)}")
        self.out_features, self.in_features = codes.shape
        self.scheme = scheme
        self.activation = activation
        self.mode = Mode.parse(mode)
        if self.mode is Mode.W8A8 and activation is None:
            raise ShapeError(f"w8a8 needs an activation scheme for {scheme.name}")
        codes = codes.to(torch.uint8).contiguous()
        # FP4 / FP6 codes are held packed (2 per byte, 4 per 3 bytes): a quarter of bf16 for FP4
        group = {4: 2, 6: 4}.get(scheme.element.bits)  # codes per packed unit
        self.packed = group is not None and self.in_features % group == 0
        if self.packed:
            codes = torch.from_numpy(np.ascontiguousarray(pack(codes.numpy(), scheme.element)))
        self.register_buffer("codes", codes)
        self.register_buffer("scale_fp32", scale_fp32.to(torch.float32).contiguous())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        if self.activation is not None:
            check_operands(self._probe_activation(), self.weight_q())
        self._fw = None  # the fused kernels' plan (nn/fused.py), made on the first forward

    def __getstate__(self):  # copies and pickles drop the plan (it holds addresses)
        return {**super().__getstate__(), "_fw": None}

    def fused_weight(self) -> fused.FusedWeight:
        """The fused kernels' view of the codes and scales (remade if the buffers were replaced)."""
        fw = self._fw
        if fw is None or not fw.holds(self.codes, self.scale_fp32):
            fw = self._fw = fused.FusedWeight.build(
                self.codes, self.scale_fp32, self.scheme, (self.out_features, self.in_features), self.packed
            )
        return fw

    @classmethod
    def from_linear(cls, linear: nn.Linear, preset, mode="weight-only") -> FP8Linear:
        scheme, _ = resolve_scheme(preset, Role.WEIGHT)
        q = quantize(linear.weight.detach().float().contiguous(), scheme, role="weight")
        act = get_preset(preset).activation if not isinstance(preset, Scheme) else None
        return cls(q.codes, q.scale_fp32, scheme, linear.bias, mode, act)

    @classmethod
    def from_quantized(cls, q: QuantizedTensor, bias=None, mode="weight-only", activation=None) -> FP8Linear:
        codes = torch.as_tensor(np.asarray(q.codes, np.uint8))
        scale = torch.as_tensor(np.asarray(q.scale_fp32, np.float32))
        return cls(codes, scale, q.scheme, bias, mode, activation)

    def weight_q(self) -> QuantizedTensor:
        codes = _np(self.codes)
        if self.packed:
            codes = unpack(codes, self.scheme.element)
        return QuantizedTensor(
            codes=codes,
            scale=_np(self.scale_fp32),
            scale_fp32=_np(self.scale_fp32),
            shape=(self.out_features, self.in_features),
            scheme=self.scheme,
            role=Role.WEIGHT,
            src_dtype="float32",
            framework=Framework.NUMPY,
        )

    def _probe_activation(self) -> QuantizedTensor:
        return quantize(np.zeros((1, self.in_features), np.float32), self.activation, role="activation")

    def dequantized_weight(self, dtype=torch.float32) -> torch.Tensor:
        if dtype == torch.bfloat16:
            w = np.asarray(dequantize(self.weight_q(), "bfloat16"))
            return torch.from_numpy(w.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(np.asarray(dequantize(self.weight_q(), "float32"))).to(dtype)

    def resident_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scale_fp32)) + (
            0 if self.bias is None else self.bias.numel() * self.bias.element_size()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fw = self._fw  # the fused kernels' decode fast path: a few checks, one C call
        if fw is not None and self.mode is Mode.WEIGHT_ONLY and fw.g is not None and fw.takes(x, self._buffers):
            return fw(x, self.bias)
        if x.shape[-1] != self.in_features:
            raise ShapeError(f"FP8Linear: input has {x.shape[-1]} features, the layer takes {self.in_features}")
        # the kernels record no autograd graph: inputs that need gradients take the dense path
        fused_ok = fused.enabled() and x.device.type == "cpu" and not (x.requires_grad and torch.is_grad_enabled())
        fw = self.fused_weight() if fused_ok else None
        if fw is not None and not fw.runs(torch.float32 if self.mode is Mode.W8A8 else x.dtype):
            fw = None
        if self.mode is Mode.WEIGHT_ONLY:
            if fw is not None:
                return fw(x, self.bias)
            w = self.dequantized_weight(x.dtype if x.dtype in (torch.bfloat16, torch.float32) else torch.float32)
            return nn.functional.linear(x.to(w.dtype), w, None if self.bias is None else self.bias.to(w.dtype)).to(
                x.dtype
            )
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).float().contiguous()
        aq = quantize(x2, self.activation, role="activation", nonfinite="propagate")
        if fw is not None:  # the activations' values (exact for power-of-two scales), then the fused GEMV / GEMM
            return fw(torch.as_tensor(dequantize(aq, "float32")), self.bias).reshape(*lead, -1).to(x.dtype)
        y = scaled_matmul(aq, self.weight_q())
        y = torch.as_tensor(y) if not isinstance(y, torch.Tensor) else y
        if self.bias is not None:
            y = y + self.bias.float()
        return y.reshape(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, scheme={self.scheme.name}, "
            f"block={self.scheme.block}, mode={self.mode.value}"
        )
