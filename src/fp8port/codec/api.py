"""`encode` / `decode`: the user-facing codec over NumPy arrays and torch tensors."""

from __future__ import annotations

import enum

import ml_dtypes
import numpy as np

from ..errors import UnknownNameError, UnsupportedInputError
from ..formats import Kind, get_format
from . import fast, reference
from .policy import Rounding
from .profiles import resolve


class Backend(enum.Enum):
    FAST = "fast"
    REFERENCE = "reference"

    @classmethod
    def parse(cls, value):
        if isinstance(value, cls):
            return value
        if value in (None, "auto"):
            return cls.FAST
        try:
            return cls(str(value).lower())
        except ValueError:
            raise UnknownNameError("backend", value, ["auto", "fast", "reference"]) from None


_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))
_WIDEN = (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))


def _torch():
    import torch

    return torch


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "dtype") and hasattr(x, "device")


def as_float_array(x, what: str = "input") -> np.ndarray:
    """A float32 or float64 NumPy view/copy of x, with every value exactly preserved."""
    if _is_torch(x):
        torch = _torch()
        if x.dtype in (torch.float32, torch.float64):
            return x.detach().cpu().numpy()
        if x.dtype in (torch.bfloat16, torch.float16):
            return x.detach().cpu().float().numpy()
        raise UnsupportedInputError(
            f"{what}: torch dtype {x.dtype} is not supported; use float64, float32, float16 or bfloat16"
        )
    arr = np.asarray(x)
    if arr.dtype in _FLOATS:
        return arr
    if arr.dtype in _WIDEN:
        return arr.astype(np.float32)
    if arr.dtype.kind in "iub" and not isinstance(x, np.ndarray):  # Python ints in a list
        return arr.astype(np.float64)
    raise UnsupportedInputError(
        f"{what}: dtype {arr.dtype} is not supported; use float64, float32, float16 or bfloat16"
    )


def _like(out: np.ndarray, x):
    return _torch().from_numpy(out) if _is_torch(x) else out


def encode(x, fmt, *, rounding=None, overflow=None, profile=None, seed=None, backend="auto"):
    """Encode floats as codes of `fmt`: a uint8 array (or tensor), one code per element.

    rounding: "rne" | "away" | "zero" | "stochastic" (default: the profile's, RNE for all
        formats but hifloat8, which rounds ties away).
    overflow: "saturate" | "nonfinite" | "error" (applies to finite overflow and to +-Inf).
    profile: "default", "ml_dtypes", "torch", "en_dtypes", "ocp-mx", "triton-hopper",
        "ascend-sat", "ascend-nosat": whose edge behaviour to reproduce.
    seed: makes rounding="stochastic" reproducible (numpy's default_rng(seed).random).
    """
    spec, rules = resolve(fmt, profile, rounding, overflow)
    arr = as_float_array(x)
    u = None
    if rules.rounding is Rounding.STOCHASTIC:
        u = np.random.default_rng(seed).random(arr.shape)
    # the fused encoder forms INT codes in 8 bits; a narrower INT element (int4) takes the reference
    if Backend.parse(backend) is Backend.REFERENCE or (spec.kind is Kind.INT and spec.bits < 8):
        codes = reference.encode(arr.astype(np.float64), spec, rules, u)
    else:
        codes, bad = fast.encode(arr, spec, rules, u)
        if bad is not None and bad.any():
            reference.raise_first(arr, bad.astype(bool), spec, "value")
    return _like(codes, x)


def as_codes(codes, spec) -> np.ndarray:
    """uint8 NumPy codes from uint8 arrays/tensors or arrays of the format's own dtype."""
    if _is_torch(codes):
        torch = _torch()
        if codes.dtype.itemsize != 1 or codes.dtype.is_floating_point and codes.dtype not in (
            torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz,
            torch.float8_e5m2fnuz, torch.float8_e8m0fnu,
        ):
            raise UnsupportedInputError(f"codes: torch dtype {codes.dtype} is not a 1-byte code type")
        arr = codes.detach().cpu().view(torch.uint8).numpy()
    else:
        arr = np.asarray(codes)
        if arr.dtype.itemsize != 1 or arr.dtype.kind == "b":
            raise UnsupportedInputError(f"codes: dtype {arr.dtype} is not a 1-byte code type (use uint8)")
        arr = arr.view(np.uint8)
    if spec.bits < 8 and arr.size and int(arr.max()) >= spec.ncodes:
        i = np.unravel_index(int(np.argmax(arr >= spec.ncodes)), arr.shape)
        raise UnsupportedInputError(
            f"codes: {spec.name} has {spec.ncodes} codes, found 0x{int(arr[i]):02x} at index "
            f"{tuple(int(j) for j in i)} (packed data? use fp8port.unpack first)"
        )
    return arr


def decode(codes, fmt):
    """float32 values of codes (uint8 arrays or tensors, one code per element)."""
    spec = get_format(fmt)
    return _like(reference.decode(as_codes(codes, spec), spec), codes)
