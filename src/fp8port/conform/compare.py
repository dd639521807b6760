"""Compare one case's outputs with the expected ones: counts, first coordinate, bytes, values.

Codes are compared as bytes. Scales are compared in the expected representation when both
sides use it (E8M0/E4M3 bytes, or float32 bits); when one side gives bytes and the other
floats, both are compared as float32 values (bytes read as E8M0, or as E4M3 for NVFP4).
Every NaN equals every NaN: NaN payloads are not part of any scale format.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from ..errors import ShapeError, UnsupportedInputError
from ..formats import FormatSpec, get_format
from ..quant.storage import e8m0_bytes, e8m0_values
from .cases import Case
from .targets import Expected, ScaleKind


class Status(enum.Enum):
    OK = "ok"
    MISMATCH = "mismatch"
    MISSING = "missing"


@dataclass(frozen=True)
class Mismatch:
    array: str  # "codes" or "scales"
    index: tuple[int, ...]
    expected: str  # hex: a byte (0x7e) or float32 bits (0x3f800000)
    got: str
    expected_value: float
    got_value: float


@dataclass(frozen=True)
class CaseResult:
    case: str
    status: Status
    code_mismatches: int = 0
    scale_mismatches: int = 0
    size: int = 0  # codes compared
    first: tuple[Mismatch, ...] = ()  # the first scale mismatch, then the first code mismatch
    scales_given: bool = True

    @property
    def mismatches(self) -> int:
        return self.code_mismatches + self.scale_mismatches


def _values(codes: np.ndarray, spec: FormatSpec) -> np.ndarray:
    table = np.append(spec.values, np.nan)  # codes beyond the format read as NaN
    return table[np.minimum(codes.astype(np.int64), spec.ncodes)]


def _fit(a: np.ndarray, shape, case: str, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.shape == tuple(shape):
        return a
    if a.size == int(np.prod(shape)):
        return a.reshape(shape)  # same elements, other layout (flattened, or a (R, n) scale grid)
    raise ShapeError(f"case {case}: {what} has shape {a.shape}, expected {tuple(shape)}")


def as_codes(a: np.ndarray, case: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.itemsize != 1 or a.dtype.kind == "b":
        raise UnsupportedInputError(
            f"case {case}: codes must be one byte per element (uint8, int8 or a float8 dtype), got {a.dtype}"
        )
    return a.view(np.uint8)


def _scale_values(a: np.ndarray, kind: ScaleKind) -> np.ndarray:
    if a.dtype == np.uint8:
        if kind is ScaleKind.E4M3:
            return _values(a, get_format("float8_e4m3fn")).astype(np.float32)
        return e8m0_values(a)
    return a.astype(np.float32)


def _hex(a: np.ndarray, i) -> str:
    v = a[i]
    return f"0x{int(v):02x}" if a.dtype == np.uint8 else f"0x{int(np.float32(v).view(np.uint32)):08x}"


def _pow2_or_nan(a: np.ndarray) -> bool:
    a = a.astype(np.float32)
    m, e = np.frexp(np.where(np.isfinite(a) & (a > 0), a, 1.0).astype(np.float64))
    ok = (m == 0.5) & (e - 1 >= -127) & (e - 1 <= 127)
    return bool(np.all(ok | np.isnan(a)))


def _diff_scales(want: np.ndarray, got: np.ndarray, kind: ScaleKind):
    """(mismatch mask, the two arrays as compared, their float32 values)."""
    if got.dtype == np.uint8 and want.dtype != np.uint8 and _pow2_or_nan(want):
        want = e8m0_bytes(want)  # float32 power-of-two scales against E8M0 bytes: compare bytes
    if got.dtype == np.uint8 and want.dtype == np.uint8:
        return want != got, want, got
    wv, gv = _scale_values(want, kind), _scale_values(got, kind)
    same = (wv.view(np.uint32) == gv.view(np.uint32)) | (np.isnan(wv) & np.isnan(gv))
    return ~same, wv, gv


def compare(case: Case, exp: Expected, spec: FormatSpec, codes, scales=None) -> CaseResult:
    codes = _fit(as_codes(codes, case.name), exp.codes.shape, case.name, "codes")
    bad = exp.codes != codes
    first = []
    if bad.any():
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        first.append(
            Mismatch(
                "codes",
                i,
                f"0x{int(exp.codes[i]):02x}",
                f"0x{int(codes[i]):02x}",
                float(_values(exp.codes[i], spec)),
                float(_values(codes[i], spec)),
            )
        )
    n_scale = 0
    given = scales is not None or exp.scales is None
    if exp.scales is not None and scales is not None:
        got = np.asarray(scales)
        if got.dtype.kind not in "uf" or (got.dtype.kind == "u" and got.dtype.itemsize != 1):
            raise UnsupportedInputError(
                f"case {case.name}: scales must be uint8 (E8M0/E4M3 bytes) or floating point, got {got.dtype}"
            )
        got = _fit(got, exp.scales.shape, case.name, "scales")
        sbad, w, g = _diff_scales(exp.scales, got, exp.scale_kind)
        n_scale = int(sbad.sum())
        if n_scale:  # a wrong scale explains its block's codes: list it first
            i = tuple(int(j) for j in np.argwhere(sbad)[0])
            wv, gv = _scale_values(w, exp.scale_kind), _scale_values(g, exp.scale_kind)
            first.insert(0, Mismatch("scales", i, _hex(w, i), _hex(g, i), float(wv[i]), float(gv[i])))
    n_code = int(bad.sum())
    status = Status.MISMATCH if n_code or n_scale else Status.OK
    return CaseResult(case.name, status, n_code, n_scale, int(exp.codes.size), tuple(first), given)
