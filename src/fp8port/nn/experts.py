"""QuantizedExperts: stacked MoE expert weights [E, ...] held as codes and scales.

transformers' MoE modules (GptOssExperts, ...) keep every expert in one 3-D parameter and, in their
eager forward, index it per expert (`self.gate_up_proj[expert_idx]`). QuantizedExperts stands in for
that parameter: indexing it dequantizes one expert into the model's dtype, so resident memory is the
codes (FP4 packed) and float32 scales plus one expert's dense weight while it is used. For
power-of-two scales the bf16 weights are exact: the forward equals that of the dequantized model.
Experts run weight-only in both load modes (gpt-oss's own kernels keep BF16 activations too).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..codec.packing import pack, unpack
from ..errors import ShapeError
from ..quant import QuantizedTensor, Role, dequantize
from ..quant.scheme import BlockKind, BlockShape
from ..quant.tensor import Framework


class QuantizedExperts(nn.Module):
    """`experts[i]` is expert i's weight (shape[1:]) dequantized into `dtype`."""

    def __init__(self, q: QuantizedTensor, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        shape = tuple(q.shape)
        if len(shape) < 3 or q.scheme.block.extents(shape)[0] != 1:
            raise ShapeError(
                f"QuantizedExperts needs [experts, ...] with blocks inside each expert; got "
                f"{list(shape)} in {q.scheme.block}"
            )
        scheme, b = q.scheme, q.scheme.block
        if b.kind in (BlockKind.VECTOR, BlockKind.ROW):  # an axis counted from the end fits each expert too
            scheme = scheme.with_(block=BlockShape(b.kind, b.size, b.axis % len(shape) - len(shape)))
        self.shape, self.scheme, self.dtype = shape, scheme, dtype
        codes = np.asarray(q.codes, np.uint8)
        self.packed = q.scheme.element.bits == 4 and shape[-1] % 2 == 0  # two E2M1 codes per byte
        if self.packed:
            codes = pack(codes, q.scheme.element)
        self.register_buffer("codes", torch.from_numpy(np.ascontiguousarray(codes)))
        self.register_buffer("scale_fp32", torch.from_numpy(np.ascontiguousarray(q.scale_fp32, np.float32)))

    def __len__(self) -> int:
        return self.shape[0]

    def expert(self, i: int) -> QuantizedTensor:
        codes = self.codes[i].numpy()
        if self.packed:
            codes = unpack(codes, self.scheme.element)
        s = self.scale_fp32[i].numpy()
        return QuantizedTensor(
            codes=codes,
            scale=s,
            scale_fp32=s,
            shape=self.shape[1:],
            scheme=self.scheme,
            role=Role.WEIGHT,
            src_dtype="float32",
            framework=Framework.NUMPY,
        )

    def __getitem__(self, i) -> torch.Tensor:
        i = int(i)
        if self.dtype == torch.bfloat16:
            w = np.asarray(dequantize(self.expert(i), "bfloat16"))
            return torch.from_numpy(w.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(np.asarray(dequantize(self.expert(i), "float32"))).to(self.dtype)

    def resident_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scale_fp32))

    def extra_repr(self) -> str:
        return f"shape={list(self.shape)}, scheme={self.scheme.name}, block={self.scheme.block}"
