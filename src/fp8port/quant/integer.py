"""Vectorized quantization for integer elements (GGUF Q8_0's `qint8`, MXINT8's `int8`) in 1xN blocks
along the last axis: the reference's steps in float32 NumPy on whole arrays, no per-element table.

The reference (reference.py) encodes through the codec's generic binade grid in float64, which is
slow for integers; here an element is round(y * 2^mbits) clamped to the code range, which is the same
number for every finite y (|y| * 2^mbits < 2^24 is exact in float32, and the fraction r = v - floor(v)
is exact). tests/quant/test_integer.py checks bytes equal to the reference.
"""

from __future__ import annotations

import numpy as np

from ..codec.policy import Overflow, Rounding
from ..formats import Kind
from .reference import _finish_scales
from .scheme import Apply, BlockKind, Scheme

F32 = np.float32


def covers(scheme: Scheme, shape: tuple[int, ...]) -> bool:
    """Whether `quantize` runs this scheme on a tensor of this shape (else: the reference)."""
    b = scheme.block
    return (
        scheme.element.kind is Kind.INT
        and scheme.element.bits == 8
        and scheme.scale_rule.fn is not None
        and scheme.apply in (Apply.DIVIDE, Apply.RECIPROCAL, Apply.RECIPROCAL_UNROUNDED)
        and len(shape) >= 1
        and b.kind is BlockKind.VECTOR
        and b.axis in (-1, len(shape) - 1)
        and shape[-1] % b.size[0] == 0
        and scheme.rules.rounding in (Rounding.RNE, Rounding.AWAY)
        and scheme.rules.overflow is Overflow.SATURATE
    )


def quantize(x: np.ndarray, scheme: Scheme) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes uint8 like x, stored scale grid, float32 multipliers) of finite float32 `x` (see `covers`)."""
    n = scheme.block.size[0]
    xb = x.reshape(*x.shape[:-1], x.shape[-1] // n, n)
    amax = np.max(np.abs(xb), axis=-1) if xb.size else np.zeros(xb.shape[:-1], F32)
    s = scheme.scale_rule.fn(amax, scheme.element, scheme)
    loaded, stored = _finish_scales(s, amax, scheme)
    with np.errstate(all="ignore"):
        if scheme.apply is Apply.DIVIDE:
            y = xb / loaded[..., None]
        elif scheme.apply is Apply.RECIPROCAL:
            y = xb * (F32(1) / loaded)[..., None]
        else:  # RECIPROCAL_UNROUNDED
            y = xb * np.where(s == 0, F32(0), F32(1) / s).astype(F32)[..., None]
    v = np.abs(y.astype(F32)) * F32(2.0**scheme.element.mbits)
    f = np.floor(v)
    r = v - f
    up = r >= 0.5 if scheme.rules.rounding is Rounding.AWAY else (r > 0.5) | ((r == 0.5) & (np.fmod(f, 2) == 1))
    q = np.where(np.isnan(y), 0, np.where(np.signbit(y), -(f + up), f + up))  # 0/0 of a zero block: code 0
    lo, hi = -(1 << (scheme.element.bits - 1)), (1 << (scheme.element.bits - 1)) - 1
    codes = np.clip(q, lo, hi).astype(np.int8).view(np.uint8).reshape(x.shape)
    return codes, stored, loaded.astype(F32)
