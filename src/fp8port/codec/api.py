"""`encode` / `decode`: the user-facing codec over NumPy arrays and torch tensors."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ..arrays import is_torch, torch_module
from ..backends import Backend
from ..errors import UnsupportedInputError
from ..formats import Kind, get_format
from . import fast, reference
from .policy import Rounding
from .profiles import resolve

_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))
_WIDEN = (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))


def as_float_array(x, what: str = "input") -> np.ndarray:
    """A float32 or float64 NumPy view/copy of x, with every value exactly preserved."""
    if is_torch(x):
        torch = torch_module()
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


def _bf16_bits(x) -> np.ndarray | None:
    """The uint16 bits of a bfloat16 array or CPU tensor (no copy where contiguous), else None."""
    if is_torch(x):
        torch = torch_module()
        if x.dtype != torch.bfloat16 or x.device.type != "cpu":
            return None
        return x.detach().contiguous().view(torch.int16).numpy().view(np.uint16)
    if isinstance(x, np.ndarray) and x.dtype == np.dtype(ml_dtypes.bfloat16):
        return np.ascontiguousarray(x).view(np.uint16)
    return None


def _like(out: np.ndarray, x):
    return torch_module().from_numpy(out) if is_torch(x) else out


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
    be = Backend.parse(backend)
    if be is not Backend.REFERENCE and rules.rounding is not Rounding.STOCHASTIC:
        bits = _bf16_bits(x)  # bf16 input: encoded from its own bits, not widened first
        if bits is not None and (codes := fast.encode_bf16(bits, spec, rules)) is not None:
            return _like(codes, x)
    arr = as_float_array(x)
    u = None
    if rules.rounding is Rounding.STOCHASTIC:
        u = np.random.default_rng(seed).random(arr.shape)
    # the fused encoder forms INT codes in 8 bits; a narrower INT element (int4) takes the reference
    if be is Backend.REFERENCE or (spec.kind is Kind.INT and spec.bits < 8):
        codes = reference.encode(arr.astype(np.float64), spec, rules, u)
    else:
        codes, bad = fast.encode(arr, spec, rules, u)
        if bad is not None and bad.any():
            reference.raise_first(arr, bad.astype(bool), spec, "value")
    return _like(codes, x)


def as_codes(codes, spec) -> np.ndarray:
    """uint8 NumPy codes from uint8 arrays/tensors or arrays of the format's own dtype."""
    if is_torch(codes):
        torch = torch_module()
        if (
            codes.dtype.itemsize != 1
            or codes.dtype.is_floating_point
            and codes.dtype
            not in (
                torch.float8_e4m3fn,
                torch.float8_e5m2,
                torch.float8_e4m3fnuz,
                torch.float8_e5m2fnuz,
                torch.float8_e8m0fnu,
            )
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
    arr = as_codes(codes, spec)
    out = fast.decode(arr, spec)
    return _like(reference.decode(arr, spec) if out is None else out, codes)
