"""The reference codec: plain NumPy, float64 throughout, written to be obviously right.

Encoding a value is three steps:
  1. find the spacing q of representable values around |x| (the spec's `quantum_exp`);
  2. round |x| / q to an integer n with the chosen rule (exact: q is a power of two);
  3. look n*q up in the format's own value table, then apply the overflow, NaN and
     sign rules.
Every faster path is tested bit for bit against this one.
"""

from __future__ import annotations

import numpy as np

from ..errors import NonFiniteError
from ..formats import FormatSpec
from .policy import Overflow, Rounding
from .profiles import Rules, ZeroLess

F32_MIN_NORMAL = 2.0**-126


@np.errstate(invalid="ignore", over="ignore")  # s may be +inf for float64 far beyond any max
def round_integer(s: np.ndarray, rounding: Rounding, u: np.ndarray | None = None) -> np.ndarray:
    """Round non-negative float64 `s` to an integer-valued float64 (no float additions)."""
    f = np.floor(s)
    r = s - f  # exact: the fraction of s
    if rounding is Rounding.ZERO:
        up = np.zeros(s.shape, bool)
    elif rounding is Rounding.AWAY:
        up = r >= 0.5
    elif rounding is Rounding.RNE:
        up = (r > 0.5) | ((r == 0.5) & (np.fmod(f, 2) == 1))
    else:  # STOCHASTIC: up with probability r
        up = u < r
    return f + up


def nonzero_table(spec: FormatSpec) -> tuple[np.ndarray, np.ndarray]:
    """Sorted finite non-zero values and their codes."""
    v = spec.values
    keep = np.flatnonzero(np.isfinite(v) & (v != 0))
    order = np.argsort(v[keep], kind="stable")
    return v[keep][order], keep[order]


def raise_first(x: np.ndarray, bad: np.ndarray, spec: FormatSpec, what: str):
    """Raise NonFiniteError naming the first flagged element, its index and value."""
    i = np.unravel_index(int(np.flatnonzero(bad.ravel())[0]), bad.shape)
    n = int(bad.sum())
    raise NonFiniteError(
        f"{what} {float(x[i])!r} at index {tuple(int(j) for j in i)} cannot be encoded as "
        f"{spec.name} with overflow='error' ({n} such element{'s' * (n > 1)}); "
        "choose overflow='saturate' or 'nonfinite'"
    )


@np.errstate(invalid="ignore", over="ignore")
def encode(x: np.ndarray, spec: FormatSpec, rules: Rules, u: np.ndarray | None = None) -> np.ndarray:
    """Codes (uint8, one per element) of float64 `x` under `rules`."""
    x = np.asarray(x, dtype=np.float64)
    if rules.via_float32:
        x = x.astype(np.float32).astype(np.float64)
    nan = np.isnan(x)
    inf = np.isinf(x)
    neg = np.signbit(x) & ~nan & spec.signed  # unsigned formats: see the `negative` rule
    a = np.where(nan | inf, 0.0, np.abs(x))
    if rules.overflow is Overflow.ERROR and (nan | inf).any():
        raise_first(x, nan | inf, spec, "non-finite input")

    # 1-2: grid spacing and rounding
    e = np.frexp(a)[1] - 1
    qexp = spec.quantum_exp(e)
    n = round_integer(np.ldexp(a, -qexp), rules.rounding, u)
    if rules.f32_subnormal_ceil:
        n = np.where(a < F32_MIN_NORMAL, np.ceil(np.ldexp(a, -qexp)), n)
    v = np.ldexp(n, qexp)
    limit = np.where(neg, spec.max_negative, spec.max)
    over = v > limit
    if rules.overflow is Overflow.ERROR and over.any():
        raise_first(x, over, spec, "value beyond the format's range:")

    # 3: look the signed value up in the format's own table
    sv = np.where(neg, -1.0, 1.0) * np.minimum(v, limit)
    vals, vcodes = nonzero_table(spec)
    idx = np.minimum(np.searchsorted(vals, sv), len(vals) - 1)
    assert np.all((vals[idx] == sv) | (sv == 0)), "rounded value not on the format's grid"
    zero = spec.sign_bit if spec.has_negative_zero else 0
    code = np.where(sv != 0, vcodes[idx], np.where(neg, zero, 0)).astype(np.int64)
    sign = spec.sign_bit
    nan_pos = rules.nan_code
    nan_neg = rules.nan_code ^ sign if rules.nan_signed else rules.nan_code
    for mask, policy in ((over, rules.overflow), (inf, rules.inf)):
        if policy is Overflow.SATURATE or not (spec.inf_codes or spec.nan_codes):
            pos_c, neg_c = spec.max_code, spec.min_code
        elif spec.inf_codes:
            pos_c, neg_c = spec.inf_codes
        else:
            pos_c, neg_c = nan_pos, nan_neg
        code = np.where(mask, np.where(neg, neg_c, pos_c), code)
    code = np.where(nan, np.where(np.signbit(x), nan_neg, nan_pos), code)

    if not spec.has_zero:  # E8M0
        rule_code = {ZeroLess.NAN: nan_pos, ZeroLess.MIN: 0}
        finite = ~(nan | inf)
        code = np.where(finite & (v == 0) & (a > 0), rule_code[rules.underflow], code)
        code = np.where(finite & (a == 0), rule_code[rules.zero], code)
        if rules.negative is ZeroLess.NAN:
            code = np.where(x < 0, nan_pos, code)  # -Inf too
    return code.astype(np.uint8)


def decode(codes: np.ndarray, spec: FormatSpec) -> np.ndarray:
    """float32 values of codes (NaN codes decode to NaN, Inf codes to +-Inf)."""
    return spec.values.astype(np.float32)[np.asarray(codes, dtype=np.intp)]
