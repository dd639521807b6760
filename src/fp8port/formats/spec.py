"""Element formats as data: a frozen spec per format, every limit derived from its bits."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


class Kind(enum.Enum):
    FLOAT = "float"  # sign | exponent | mantissa, IEEE-like
    HIF8 = "hif8"  # Ascend HiFloat8: tapered, see hif8.py
    INT = "int"  # two's complement fixed point (the MXINT8 element)


class NaNStyle(enum.Enum):
    NONE = "none"  # no NaN code (FP4, FP6, E1M2, INT8)
    IEEE = "ieee"  # exponent all ones, mantissa non-zero (E5M2)
    ALL_ONES = "all-ones"  # only the all-ones magnitude (E4M3 "fn", E8M0)
    NEG_ZERO = "neg-zero"  # 0x80, the would-be -0, is the only NaN ("fnuz", HiF8)


class Class(enum.Enum):
    ZERO = "zero"
    SUBNORMAL = "subnormal"
    NORMAL = "normal"
    INF = "inf"
    NAN = "nan"


@dataclass(frozen=True)
class FormatSpec:
    """One element format. Only bits, bias and special rules are stated; the rest is derived."""

    name: str
    kind: Kind
    bits: int
    ebits: int = 0
    mbits: int = 0  # mantissa bits (FLOAT), fraction bits (INT)
    bias: int = 0
    signed: bool = True
    inf: bool = False  # IEEE infinities: exponent all ones, mantissa zero
    nan: NaNStyle = NaNStyle.NONE
    subnormals: bool = True
    torch: str | None = None
    ml_dtypes: str | None = None
    safetensors: str | None = None
    en_dtypes: str | None = None
    summary: str = field(default="", compare=False)

    # ---- bit layout -------------------------------------------------------
    @property
    def ncodes(self) -> int:
        return 1 << self.bits

    @property
    def sign_bit(self) -> int:
        return 1 << (self.bits - 1) if self.signed else 0

    @property
    def has_negative_zero(self) -> bool:
        return self.signed and self.kind is Kind.FLOAT and self.nan is not NaNStyle.NEG_ZERO

    @cached_property
    def has_zero(self) -> bool:
        return bool((self.values == 0).any())

    def encode_sign(self, code):
        """The code of minus the value of non-negative `code` (an int or an integer array)."""
        if self.kind is Kind.INT:
            return (-code) & (self.ncodes - 1)
        return code | self.sign_bit

    def decode_code(self, code: int) -> float:
        """The value of one code (plain Python; the definition every table derives from)."""
        if not 0 <= code < self.ncodes:
            raise ValueError(f"{self.name}: code {code} out of range")
        if self.kind is Kind.HIF8:
            from .hif8 import decode_code

            return decode_code(code)
        if self.kind is Kind.INT:
            signed = code - self.ncodes if code & self.sign_bit else code
            return math.ldexp(signed, -self.mbits)
        neg = bool(code & self.sign_bit)
        mag = code & ~self.sign_bit
        if self.nan is NaNStyle.NEG_ZERO and code == self.sign_bit:
            return math.nan
        exp, man = mag >> self.mbits, mag & ((1 << self.mbits) - 1)
        top = (1 << self.ebits) - 1
        if self.nan is NaNStyle.ALL_ONES and mag == (1 << (self.bits - self.signed)) - 1:
            return math.nan
        if self.nan is NaNStyle.IEEE and exp == top and man:
            return math.nan
        if self.inf and exp == top and not man:
            return -math.inf if neg else math.inf
        if exp == 0 and self.subnormals:
            v = math.ldexp(man, 1 - self.bias - self.mbits)
        else:
            v = math.ldexp((1 << self.mbits) + man, exp - self.bias - self.mbits)
        return -v if neg else v

    # ---- derived tables and limits ----------------------------------------
    @cached_property
    def values(self) -> np.ndarray:
        """float64 value of every code, indexed by code (NaN where the code is NaN)."""
        v = np.array([self.decode_code(c) for c in range(self.ncodes)], dtype=np.float64)
        v.setflags(write=False)
        return v

    @cached_property
    def classes(self) -> tuple[Class, ...]:
        out = []
        for v in self.values:
            if np.isnan(v):
                out.append(Class.NAN)
            elif np.isinf(v):
                out.append(Class.INF)
            elif v == 0:
                out.append(Class.ZERO)
            elif abs(v) < self.min_normal:
                out.append(Class.SUBNORMAL)
            else:
                out.append(Class.NORMAL)
        return tuple(out)

    @cached_property
    def _positive(self) -> np.ndarray:
        v = self.values[np.isfinite(self.values)]
        return v[v > 0]

    @cached_property
    def max(self) -> float:
        return float(self._positive.max())

    @cached_property
    def min_subnormal(self) -> float:
        """Smallest positive value (equal to min_normal where there are no subnormals)."""
        return float(self._positive.min())

    @cached_property
    def min_normal(self) -> float:
        if self.kind is Kind.FLOAT:
            return math.ldexp(1.0, self.emin)
        if self.kind is Kind.HIF8:
            from .hif8 import MIN_NORMAL_EXP

            return math.ldexp(1.0, MIN_NORMAL_EXP)
        return self.min_subnormal  # INT: a fixed grid, every non-zero value is "normal"

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal binade (FLOAT)."""
        return (1 if self.subnormals else 0) - self.bias

    @cached_property
    def emax(self) -> int:
        """floor(log2(max)): the OCP MX `emax_elem` used by the FLOOR scale rule."""
        return math.frexp(self.max)[1] - 1

    @cached_property
    def nan_codes(self) -> tuple[int, ...]:
        return tuple(int(c) for c in np.flatnonzero(np.isnan(self.values)))

    @cached_property
    def inf_codes(self) -> tuple[int, ...]:
        """(+Inf, -Inf) codes, or () where the format has no Inf."""
        pos = np.flatnonzero(self.values == np.inf)
        neg = np.flatnonzero(self.values == -np.inf)
        return (int(pos[0]), int(neg[0])) if len(pos) else ()

    @cached_property
    def max_code(self) -> int:
        return int(np.flatnonzero(self.values == self.max)[0])

    @cached_property
    def max_negative(self) -> float:
        """Magnitude of the most negative finite value (max, but 2 for two's complement INT8)."""
        v = self.values[np.isfinite(self.values)]
        return float(-v.min()) if self.signed else self.max

    @cached_property
    def min_code(self) -> int:
        """Code of the most negative finite value (max_code for unsigned formats)."""
        return int(np.flatnonzero(self.values == -self.max_negative)[0]) if self.signed else self.max_code

    def quantum_exp(self, e: np.ndarray) -> np.ndarray:
        """log2 of the spacing of representable values in binade e (|x| in [2^e, 2^(e+1))).

        Below the smallest binade the spacing stays that of the smallest one (gradual
        underflow); above the largest it stays that of the largest, so rounding there
        lands beyond `max` and becomes an overflow.
        """
        e = np.asarray(e)
        if self.kind is Kind.INT:
            return np.full_like(e, -self.mbits)
        if self.kind is Kind.HIF8:
            from .hif8 import quantum_exp

            return quantum_exp(e)
        return np.clip(e, self.emin, self.emax) - self.mbits

    def describe(self) -> dict:
        """A JSON-able summary: layout, limits, specials and library names."""
        hexs = lambda cs: [f"0x{c:02x}" for c in cs]  # noqa: E731
        return {
            "name": self.name,
            "kind": self.kind.value,
            "bits": self.bits,
            "exponent_bits": self.ebits if self.kind is Kind.FLOAT else None,
            "mantissa_bits": self.mbits if self.kind is Kind.FLOAT else None,
            "bias": self.bias if self.kind is Kind.FLOAT else None,
            "signed": self.signed,
            "max": self.max,
            "min_normal": self.min_normal,
            "min_subnormal": self.min_subnormal,
            "emax": self.emax,
            "inf_codes": hexs(self.inf_codes),
            "nan_codes": hexs(self.nan_codes),
            "negative_zero": self.has_negative_zero,
            "names": {
                "torch": self.torch,
                "ml_dtypes": self.ml_dtypes,
                "safetensors": self.safetensors,
                "en_dtypes": self.en_dtypes,
            },
            "summary": self.summary,
        }
