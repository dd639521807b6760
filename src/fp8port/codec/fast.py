"""What backend='fast' runs for encode / decode: the C kernels (native.py) where they cover the
format, profile and input, else the Numba kernel (numba_kernel.py). Both are bit-exact with
reference.py (tests/codec run each of them on every ISA tier this CPU has)."""

from __future__ import annotations

import numpy as np

from ..formats import FormatSpec
from . import native
from .profiles import Rules


def encode(x: np.ndarray, spec: FormatSpec, rules: Rules, u: np.ndarray | None = None):
    """Codes of float32 or float64 `x`, and (with overflow='error' only, else None) a uint8 mask of
    the values that overflowed or were not finite."""
    if u is None and native.covers(spec, rules):
        if x.dtype == np.float32 or (x.dtype == np.float64 and rules.via_float32):
            bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
            return native.encode(bits, spec, rules), None
    from . import numba_kernel  # imports Numba (half a second): only where the C kernels do not cover

    return numba_kernel.encode(x, spec, rules, u)


def encode_bf16(bits: np.ndarray, spec: FormatSpec, rules: Rules):
    """Codes of bf16 bit patterns (uint16), or None where the C kernels do not cover the format."""
    return native.encode(bits, spec, rules) if native.covers(spec, rules) else None


def decode(codes: np.ndarray, spec: FormatSpec) -> np.ndarray | None:
    """float32 values of uint8 codes, or None without the C kernels (the caller's reference is a
    table lookup already)."""
    return native.decode(codes, spec) if native.cpu.available() else None
