"""Scale storage: float32 multipliers <-> the stored scale tensor (NumPy side)."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from .scheme import ScaleStorage

F32 = np.float32


def e8m0_bytes(s: np.ndarray) -> np.ndarray:
    """Bytes of power-of-two float32 scales 2^E (E in [-127, 127]); NaN -> 0xFF."""
    s = np.asarray(s, dtype=F32)
    nan = ~np.isfinite(s) | (s <= 0)
    _, e = np.frexp(np.where(nan, 1.0, s).astype(np.float64))
    return np.where(nan, 255, e + 126).astype(np.uint8)


def e8m0_values(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, dtype=np.uint8)
    v = np.ldexp(np.ones(b.shape), np.minimum(b, 254).astype(np.int64) - 127).astype(F32)
    return np.where(b == 255, F32(np.nan), v).astype(F32)


def store(s: np.ndarray, storage: ScaleStorage) -> np.ndarray:
    """The stored scale tensor (numpy) for float32 multipliers `s` (E4M3_TENSOR: see reference)."""
    if storage is ScaleStorage.FLOAT32:
        return np.asarray(s, dtype=F32)
    if storage is ScaleStorage.BFLOAT16:
        return np.asarray(s, dtype=F32).astype(ml_dtypes.bfloat16)
    if storage is ScaleStorage.FLOAT16:
        return np.asarray(s, dtype=F32).astype(np.float16)
    if storage is ScaleStorage.E8M0:
        return e8m0_bytes(s).view(ml_dtypes.float8_e8m0fnu)
    raise ValueError(f"{storage} scales are produced by the nvfp4 rule itself")


def load(stored: np.ndarray, storage: ScaleStorage) -> np.ndarray:
    """float32 multipliers of a stored scale tensor."""
    if storage is ScaleStorage.E8M0:
        return e8m0_values(np.asarray(stored).view(np.uint8))
    return np.asarray(stored).astype(F32)
