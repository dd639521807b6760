"""Code tables read off the reference: shared by the C, Numba and quantize kernels."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..formats import FormatSpec
from .profiles import Rules
from .reference import decode, encode


@lru_cache(maxsize=64)
def encode_lut(spec: FormatSpec, rules: Rules) -> np.ndarray:
    """Code of every bf16 bit pattern (65,536 entries) under the codec reference. Indexed by a
    float32 value rounded to bf16 with a sticky bit (round to odd), it encodes any float32 exactly
    for formats of at most 6 significand bits (round-to-odd double rounding)."""
    pats = (np.arange(65536, dtype=np.uint32) << 16).view(np.float32)
    with np.errstate(invalid="ignore"):  # NaN patterns are expected here
        lut = encode(pats.astype(np.float64), spec, rules)
    lut.setflags(write=False)
    return lut


@lru_cache(maxsize=64)
def decode_lut(spec: FormatSpec) -> np.ndarray:
    """float32 value of every code."""
    return decode(np.arange(1 << spec.bits), spec)
