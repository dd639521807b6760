"""The codec's Numba kernel: every format, profile and rounding (stochastic and overflow='error'
included), float32 or float64 input, driven by per-binade tables.

Where the reference searches the format's value table, this path works per binade:
for |x| in [2^e, 2^(e+1)) the grid spacing is 2^qexp[e] and the code of 2^e is
base[e]; a value n * 2^qexp rounds into the code base[e'] + (mantissa) of its own
binade e'. Both tables are read off the spec's decoded values, so the kernel knows
nothing about bit layouts, and it is tested bit for bit against the reference.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ..formats import FormatSpec, Kind
from .native import nan_codes, special_codes
from .policy import Overflow, Rounding
from .profiles import Rules, ZeroLess

_ROUND = {Rounding.RNE: 0, Rounding.AWAY: 1, Rounding.ZERO: 2, Rounding.STOCHASTIC: 3}
F32_MIN_NORMAL = 2.0**-126


def _binade_tables(spec: FormatSpec):
    """lo, and per binade e in [lo, emax] (float64, so the kernel only multiplies):
    2^-qexp (into grid units), 2^qexp (back), 2^(e - qexp) (2^e in grid units); the code
    of 2^e, and the code a value rounded up to 2^(e+1) gets."""
    lo = math.frexp(spec.min_subnormal)[1] - 1
    es = np.arange(lo, spec.emax + 1)
    qexp = spec.quantum_exp(es).astype(np.int64)
    one = np.ldexp(1.0, es - qexp)
    base = np.array(
        [np.flatnonzero((spec.values == 2.0 ** float(e)) & ~np.signbit(spec.values))[0] for e in es], np.int64
    )
    # IEEE-like and integer codes carry into the next binade by plain addition; HiF8's
    # tapered layout does not, so the next power of two's own code is used.
    carry = base + one.astype(np.int64)
    if spec.kind is Kind.HIF8:
        carry[:-1] = base[1:]
    return lo, np.ldexp(1.0, -qexp), np.ldexp(1.0, qexp), one, base, carry


_TABLES: dict[str, tuple] = {}


def tables(spec: FormatSpec):
    if spec.name not in _TABLES:
        _TABLES[spec.name] = _binade_tables(spec)
    return _TABLES[spec.name]


@numba.njit(parallel=True, cache=True)
def _encode_kernel(
    x, xbits, fshift, fmask, fbias, out, flags, u, lo, up_t, down_t, one_t, base, carry, fmax, fmax_neg, p
):
    (
        rounding,
        int_kind,
        signed,
        neg_zero,
        sign_bit,
        nan_pos,
        nan_neg,
        ovf_pos,
        ovf_neg,
        inf_pos,
        inf_neg,
        has_zero,
        zero_code,
        under_code,
        neg_nan,
        sub_ceil,
        check,
    ) = (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13], p[14], p[15], p[16])
    hi = base.shape[0] - 1
    sign_shift = fshift + (8 if fshift == 23 else 11)
    for i in numba.prange(x.shape[0]):
        # The common path is branch-free (selects only): data-dependent branches
        # mispredict on real tensors. Specials are rare and handled at the end.
        xi = np.float64(x[i])
        a = abs(xi)
        neg = (xbits[i] >> sign_shift) != 0
        e = np.int64((xbits[i] >> fshift) & fmask) - fbias  # zero/subnormal input: clamped below
        k = min(max(e - lo, 0), hi)
        s = a * up_t[k]  # exact: a power-of-two scale
        f = np.floor(s)
        r = s - f
        if rounding == 0:
            up = (r > 0.5) | ((r == 0.5) & (np.fmod(f, 2.0) == 1.0))
        elif rounding == 1:
            up = r >= 0.5
        elif rounding == 2:
            up = False
        else:
            up = u[i] < r
        if sub_ceil:
            up = (r > 0) if a < F32_MIN_NORMAL else up
        n = f + up
        one = one_t[k]
        c = carry[k] if n >= 2 * one else base[k] + np.int64(n - one)
        c = 0 if n == 0 else c
        if neg and signed and (n != 0 or neg_zero):
            c = (-c) & 0xFF if int_kind else c | sign_bit
        out[i] = c
        if (
            not (n * down_t[k] <= (fmax_neg if neg else fmax))
            or (n == 0 and not has_zero)
            or (neg and not signed and a > 0 and neg_nan)
        ):
            # NaN (fails every comparison), +-Inf, overflow, and the zero-less format's cases
            if xi != xi:
                out[i] = nan_neg if neg else nan_pos
            elif not signed and neg and a > 0 and neg_nan:
                out[i] = nan_pos
                continue
            elif a == math.inf:
                out[i] = inf_neg if neg else inf_pos
            elif n == 0:
                out[i] = zero_code if a == 0 else under_code
                continue
            else:
                out[i] = ovf_neg if neg else ovf_pos
            if check:
                flags[i] = 1


def _params(spec: FormatSpec, rules: Rules) -> np.ndarray:
    nan = nan_codes(spec, rules)
    zl = {ZeroLess.NAN: nan[0], ZeroLess.MIN: 0, ZeroLess.ABS: 0}
    return np.array(
        [
            _ROUND[rules.rounding],
            spec.kind.value == "int",
            spec.signed,
            spec.has_negative_zero,
            spec.sign_bit,
            *nan,
            *special_codes(spec, rules, rules.overflow),
            *special_codes(spec, rules, rules.inf),
            spec.has_zero,
            zl[rules.zero],
            zl[rules.underflow],
            rules.negative is ZeroLess.NAN,
            rules.f32_subnormal_ceil,
            rules.overflow is Overflow.ERROR,
        ],
        dtype=np.int64,
    )


def encode(x: np.ndarray, spec: FormatSpec, rules: Rules, u: np.ndarray | None = None):
    """Codes of float32 or float64 `x`, and (with overflow='error' only, else None) a
    uint8 mask of the values that overflowed or were not finite."""
    if x.dtype == np.float64 and rules.via_float32:
        x = x.astype(np.float32)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(flat.shape, np.uint8)
    flags = np.zeros(flat.shape if rules.overflow is Overflow.ERROR else 1, np.uint8)
    lo, up_t, down_t, one_t, base, carry = tables(spec)
    uu = np.zeros(1) if u is None else np.ascontiguousarray(u, np.float64).reshape(-1)
    if flat.dtype == np.float32:
        bits, layout = flat.view(np.uint32), (23, 0xFF, 127)
    else:
        bits, layout = flat.view(np.uint64), (52, 0x7FF, 1023)
    _encode_kernel(
        flat,
        bits,
        *layout,
        out,
        flags,
        uu,
        lo,
        up_t,
        down_t,
        one_t,
        base,
        carry,
        spec.max,
        spec.max_negative,
        _params(spec, rules),
    )
    return out.reshape(x.shape), (flags.reshape(x.shape) if flags.size == flat.size else None)
