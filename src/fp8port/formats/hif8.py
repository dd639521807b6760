"""Ascend HiFloat8 (HiF8): the one tapered, non-IEEE element format.

Bits, MSB first: sign | dot | exponent | mantissa (Luo et al., arXiv 2409.16626;
layout confirmed against en_dtypes 0.0.4, mx-landscape.md §6.1). The dot is a
prefix code that says how many exponent bits D follow:

    dot  '11' -> D=4   '10' -> D=3   '01' -> D=2   '001' -> D=1   '0001' -> D=0   '0000' -> denormal

The D exponent bits are sign-magnitude with an implicit leading 1 in the
magnitude (D=4: +-8..15), the mantissa takes what is left of the 8 bits. The
denormal class's 3 bits m give 2^(m-23). 0x00 is the only zero, 0x80 is NaN and
the would-be 1.5*2^15 (0x6F / 0xEF) is +-Inf.
"""

from __future__ import annotations

import math

import numpy as np

# (dot prefix, its length, D). Order matters only for readability.
DOTS = ((0b11, 2, 4), (0b10, 2, 3), (0b01, 2, 2), (0b001, 3, 1), (0b0001, 4, 0))
DENORMAL_EXP0 = -23  # denormal m (1..7) means 2^(m + DENORMAL_EXP0)
INF_CODE = 0x6F
NAN_CODE = 0x80


def _fields(code: int):
    """(sign, D or None for denormal, exponent, mantissa, mantissa bits) of a code."""
    sign, body = code >> 7, code & 0x7F
    for prefix, plen, d in DOTS:
        if body >> (7 - plen) == prefix:
            rest = body & ((1 << (7 - plen)) - 1)
            mb = 7 - plen - d
            ebits, man = rest >> mb, rest & ((1 << mb) - 1)
            if d == 0:
                exp = 0
            else:
                mag = (1 << (d - 1)) | (ebits & ((1 << (d - 1)) - 1))
                exp = -mag if ebits >> (d - 1) else mag
            return sign, d, exp, man, mb
    return sign, None, None, body & 0x7, 0


def decode_code(code: int) -> float:
    if code == NAN_CODE:
        return math.nan
    if code & 0x7F == INF_CODE:
        return -math.inf if code & 0x80 else math.inf
    sign, d, exp, man, mb = _fields(code)
    if d is None:
        v = math.ldexp(1.0, man + DENORMAL_EXP0) if man else 0.0
    else:
        v = math.ldexp((1 << mb) + man, exp - mb)
    return -v if sign else v


def _mantissa_bits_by_exp() -> dict[int, int]:
    """Binade exponent -> mantissa bits, read off the layout (both signs of each D)."""
    out = {}
    for _, plen, d in DOTS:
        mb = 7 - plen - d
        mags = [0] if d == 0 else range(1 << (d - 1), 1 << d)
        for m in mags:
            out[m] = out[-m] = mb
    for m in range(1, 8):  # denormals are single powers of two
        out[m + DENORMAL_EXP0] = 0
    return out


MBITS_BY_EXP = _mantissa_bits_by_exp()
MIN_EXP = min(MBITS_BY_EXP)  # -22
MAX_EXP = max(MBITS_BY_EXP)  # 15
MIN_NORMAL_EXP = min(e for e in MBITS_BY_EXP if e > DENORMAL_EXP0 + 7)  # -15
_QEXP = np.array([e - MBITS_BY_EXP[e] for e in range(MIN_EXP, MAX_EXP + 1)], dtype=np.int64)


def quantum_exp(e):
    """log2 of the grid spacing in binade e, clamped to the format's binades."""
    idx = np.clip(np.asarray(e, dtype=np.int64), MIN_EXP, MAX_EXP) - MIN_EXP
    return _QEXP[idx]
