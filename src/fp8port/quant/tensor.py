"""QuantizedTensor: codes, scales and the scheme that made them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ..errors import ShapeError
from .presets import Role
from .scheme import Scheme


class Framework(enum.Enum):
    NUMPY = "numpy"
    TORCH = "torch"


@dataclass(frozen=True)
class QuantizedTensor:
    """A block-scaled tensor. Arrays are NumPy or torch, matching the input.

    codes: uint8, one code per element, the input's shape.
    scale: the stored scale grid (float32, bfloat16, float8_e8m0fnu, or float8_e4m3fn for NVFP4),
        one entry per block; the grid has the input's rank (ceil(dim / block) per axis).
    scale_fp32: the float32 dequantization multiplier on the same grid (value = code * scale_fp32).
    tensor_scale: NVFP4's float32 per-tensor scale (already folded into scale_fp32), else None.
    """

    codes: Any
    scale: Any
    scale_fp32: Any
    shape: tuple[int, ...]
    scheme: Scheme
    role: Role
    src_dtype: str
    framework: Framework
    tensor_scale: float | None = None

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(self.scale_fp32.shape)

    def dequantize(self, dtype=None, backend="auto"):
        from .api import dequantize

        return dequantize(self, dtype=dtype, backend=backend)

    def __repr__(self) -> str:
        return (
            f"QuantizedTensor(shape={self.shape}, scheme={self.scheme.name!r}, role={self.role.value}, "
            f"grid={self.grid}, storage={self.scheme.storage.value}, {self.framework.value})"
        )


def check_operands(a: QuantizedTensor, b: QuantizedTensor) -> None:
    """Shapes of a block-scaled a @ b.T: b is 2-D (N x K) and a's last axis is K.

    Raises ShapeError naming both shapes."""
    if len(b.shape) != 2:
        raise ShapeError(f"scaled_matmul: the weight must be 2-D (N x K); got {list(b.shape)}")
    if not a.shape or a.shape[-1] != b.shape[1]:
        raise ShapeError(f"scaled_matmul: K differs: activations {list(a.shape)} vs weight {list(b.shape)}")
