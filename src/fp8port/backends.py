"""Which implementation runs a codec or quantization call: one vocabulary for every API."""

from __future__ import annotations

from .names import NamedEnum


class Backend(NamedEnum):
    __label__ = "backend"
    AUTO = "auto"  # the fast kernels (C, Numba, or Triton on a GPU) where they cover the call, else the reference
    FAST = "fast"  # the fast kernels; a BackendError naming why where they do not cover the call
    REFERENCE = "reference"  # the plain NumPy reference, the truth every fast path is tested against
