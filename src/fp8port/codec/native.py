"""The codec on the C kernels (fp8port.cpu): parameters read off a format's spec and profile.

IEEE-like formats (E4M3, E5M2, their fnuz variants, FP6, FP4, E1M2) and INT8 are encoded by
arithmetic on the float32 bits (`encoder`); the others (HiF8, E8M0) by a 65,536-entry table of
codes indexed by the value rounded to bf16 with a sticky bit (`tables.encode_lut`). Stochastic
rounding, overflow='error' and float64 input not cast through float32 stay with Numba.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .. import cpu
from ..formats import FormatSpec, Kind
from .policy import Overflow, Rounding
from .profiles import Rules
from .tables import decode_lut, encode_lut


def special_codes(spec: FormatSpec, rules: Rules, policy: Overflow) -> tuple[int, int]:
    """(+, -) codes of a finite overflow or an Inf under `policy`: the format's Inf, else its NaN
    (NONFINITE), else +-max."""
    sat = (spec.max_code, spec.min_code)
    if policy is not Overflow.NONFINITE or not (spec.inf_codes or spec.nan_codes):
        return sat
    return spec.inf_codes or nan_codes(spec, rules)


def nan_codes(spec: FormatSpec, rules: Rules) -> tuple[int, int]:
    return rules.nan_code, rules.nan_code ^ spec.sign_bit if rules.nan_signed else rules.nan_code


@lru_cache(maxsize=64)
def encoder(spec: FormatSpec, rules: Rules) -> cpu.Enc | None:
    """The arithmetic encoder's parameters (cpu.Enc), or None where the format needs the table."""
    if spec.kind is Kind.HIF8 or not spec.has_zero or not spec.signed or rules.f32_subnormal_ceil:
        return None
    if spec.kind is Kind.INT and spec.bits != 8:  # two's complement in a byte
        return None
    if spec.kind is Kind.FLOAT and not spec.subnormals:
        return None
    if rules.rounding not in (Rounding.RNE, Rounding.AWAY, Rounding.ZERO):
        return None
    m = spec.mbits
    if spec.kind is Kind.INT:  # fixed point: every value takes the significand-shift path
        nrm_fexp, nrm_off, s, sub_base = 256, 0, 23, 150 - m
        maxq = (round(spec.max * 2**m), round(spec.max_negative * 2**m))
    else:
        b = spec.bias
        nrm_fexp, nrm_off, s, sub_base = 128 - b, (127 - b) << 23, 23 - m, 151 - b - m
        maxq = (spec.max_code & ~spec.sign_bit,) * 2
    ovf, inf, nan = (
        special_codes(spec, rules, rules.overflow),
        special_codes(spec, rules, rules.inf),
        nan_codes(spec, rules),
    )
    return cpu.Enc(
        nrm_fexp=nrm_fexp,
        nrm_off=nrm_off,
        S=s,
        half_n=1 << (s - 1),
        sub_base=sub_base,
        rne=rules.rounding is Rounding.RNE,
        away=rules.rounding is Rounding.AWAY,
        maxq_pos=maxq[0],
        maxq_neg=maxq[1],
        ovf_pos=ovf[0],
        ovf_neg=ovf[1],
        inf_pos=inf[0],
        inf_neg=inf[1],
        nan_pos=nan[0],
        nan_neg=nan[1],
        twos=spec.kind is Kind.INT,
        zneg=spec.has_negative_zero,
        sign_bit=spec.sign_bit,
    )


@lru_cache(maxsize=64)
def lean_encoder(spec: FormatSpec, rules: Rules) -> tuple[cpu.Fast, cpu.Pow2] | None:
    """Parameters of the lean encoder of finite values and of the power-of-two block path, or None
    where they do not apply: they round to nearest even and or the sign bit in (float formats with -0)."""
    e = encoder(spec, rules)
    if e is None or not e.rne or e.twos or not e.zneg or e.ovf_neg != e.ovf_pos | spec.sign_bit:
        return None
    emin = 1 - spec.bias
    magic = np.float32(2.0 ** (23 + emin - spec.mbits))
    fast = cpu.Fast(
        rnd_off=(e.half_n - 1 - e.nrm_off) % (1 << 32),
        S=e.S,
        magic=magic,
        magic_bits=int(magic.view(np.uint32)),
        min_normal=e.nrm_fexp << 23,
        maxq=e.maxq_pos,
        ovf=e.ovf_pos,
        sign_shift=spec.bits - 1,
    )
    pow2 = cpu.Pow2(M=spec.mbits, bias=spec.bias, emin=emin, maxq=e.maxq_pos, ovf=e.ovf_pos, sign_shift=spec.bits - 1)
    steps = thresholds(spec, rules) if e.ovf_pos <= NTHR else None
    if steps is not None:
        t16, t32 = steps
        z = int(t16[0] >> 7) - 1  # the codes are counted on |x| - 2^(E + z), where every threshold is normal
        pad = [(0x7FFF, 0x7FFFFFFF)] * (NTHR - len(t16))
        rel = [(int(a) - (z << 7) - 1, int(b) - (z << 23) - 1) for a, b in zip(t16, t32)] + pad
        pow2.nthr, pow2.z = NTHR, z
        pow2.thr16[:], pow2.thr32[:] = [r[0] for r in rel], [r[1] for r in rel]
    return fast, pow2


NTHR = 7  # the threshold encoder's compares: formats of at most 7 magnitudes above zero (FP4)


def thresholds(spec: FormatSpec, rules: Rules) -> tuple[np.ndarray, np.ndarray] | None:
    """For magnitude codes i = 1 .. overflow code: the smallest bf16 and float32 bit patterns the
    reference encodes to code i or above (its codes grow with |x|), or None where they do not."""
    from . import reference

    ncodes = special_codes(spec, rules, rules.overflow)[0]

    def mag(bits):
        x = np.asarray(bits, np.uint32).view(np.float32).astype(np.float64)
        return reference.encode(x, spec, rules).astype(np.int64) & ~spec.sign_bit

    b16 = np.arange(0x7F81, dtype=np.uint32) << 16  # every finite bf16 and +inf
    c16 = mag(b16)
    if np.any(np.diff(c16) < 0) or c16[-1] != ncodes or ncodes < 1:
        return None
    want = np.arange(1, ncodes + 1)
    t16 = np.searchsorted(c16, want).astype(np.uint32)
    lo, hi = np.zeros(ncodes, np.int64), np.full(ncodes, 0x7F800000, np.int64)  # code(hi) >= want
    while np.any(hi - lo > 1):  # bisection on float32 patterns: code(lo) < want <= code(hi)
        mid = (lo + hi) // 2
        up = mag(mid) >= want
        lo, hi = np.where(up, lo, mid), np.where(up, mid, hi)
    if c16[0] != 0 or np.any(t16 >> 7 < 2):  # zero codes to 0; every threshold is a normal number
        return None
    return t16, hi.astype(np.uint32)


NCELLS = 64  # entries of the cell table (one AVX-512 word permute of two registers)


@lru_cache(maxsize=64)
def cells(spec: FormatSpec, rules: Rules) -> tuple[int, np.ndarray] | None:
    """(first cell, int16 magnitude codes of NCELLS cells) for the NVFP4 cell encoder (cpu/nvfp4_cells.h),
    or None where it does not apply. A cell of a finite float32 y >= 0 is its bits >> 20 with the OR of
    the lower 20 bits as the last bit: an even cell is one value, an odd one the open interval above
    it. The table holds where the reference's code is constant on each cell (formats of at most one
    mantissa bit: every rounding boundary has at most three significant bits), read off the reference
    at both ends of every cell; the first cell starts a binade below the first nonzero code, so it and
    everything below it code to 0."""
    from . import reference

    steps = thresholds(spec, rules)
    if steps is None:
        return None
    base = ((int(steps[1][0]) >> 23) - 1) << 3
    cell = np.arange(base, base + NCELLS, dtype=np.int64)
    if base < 8 or (cell[-1] >> 3) >= 255:
        return None
    grid = (cell >> 1) << 21
    lo, hi = np.where(cell & 1, grid + 1, grid), np.where(cell & 1, grid + (1 << 21) - 1, grid)

    def mag(bits):
        x = np.asarray(bits, np.uint32).view(np.float32).astype(np.float64)
        return reference.encode(x, spec, rules).astype(np.int64) & ~spec.sign_bit

    codes = mag(lo)
    if np.any(codes != mag(hi)) or codes[0] != 0 or mag([0])[0] != 0:
        return None
    return base, codes.astype(np.int16)


def covers(spec: FormatSpec, rules: Rules) -> bool:
    """Whether encode() takes this format and profile (float32 / bf16 input; the rest is Numba's)."""
    if not cpu.available() or Overflow.ERROR in (rules.overflow, rules.inf):
        return False
    if rules.rounding is Rounding.STOCHASTIC:
        return False
    # the table path rounds through bf16 with a sticky bit: exact for up to 6 significand bits
    return encoder(spec, rules) is not None or spec.kind is Kind.HIF8 or spec.mbits <= 5


def encode(bits: np.ndarray, spec: FormatSpec, rules: Rules) -> np.ndarray:
    """Codes (uint8, the shape of `bits`) of float32 (uint32) or bf16 (uint16) bit patterns."""
    flat = np.ascontiguousarray(bits).reshape(-1)
    out = np.empty(flat.shape, np.uint8)
    enc = encoder(spec, rules)
    cpu.encode(flat, enc, None if enc is not None else encode_lut(spec, rules), out)
    return out.reshape(bits.shape)


def decode(codes: np.ndarray, spec: FormatSpec) -> np.ndarray:
    """float32 values of uint8 codes."""
    flat = np.ascontiguousarray(codes, np.uint8).reshape(-1)
    out = np.empty(flat.shape, np.float32)
    cpu.decode(flat, lut256(spec), out)
    return out.reshape(codes.shape)


@lru_cache(maxsize=64)
def lut256(spec: FormatSpec) -> np.ndarray:
    """float32 value of every byte (codes beyond a narrow format's range read as NaN)."""
    out = np.full(256, np.nan, np.float32)
    lut = decode_lut(spec)
    out[: lut.size] = lut
    return out


@lru_cache(maxsize=64)
def pow2_decoder(spec: FormatSpec) -> dict | None:
    """Fields of cpu.Dequant for decoding by arithmetic (sign-bit float formats of at most 3 mantissa
    bits), or None: the sign and exponent fields move into bf16 place, subnormal codes read a table."""
    if spec.kind is not Kind.FLOAT or not spec.has_negative_zero or not spec.subnormals or spec.mbits > 3:
        return None
    mag = np.arange(spec.sign_bit)
    special = mag[~np.isfinite(spec.values[: spec.sign_bit])]
    emin = 1 - spec.bias
    sub = (np.arange(8) * np.float32(2.0 ** (emin - spec.mbits))).astype(np.float32).view(np.uint32) >> 16
    return dict(
        arith=1,
        M_=spec.mbits,
        bias=spec.bias,
        sign_shift=spec.bits - 1,
        e_lo=-126 - emin + spec.mbits,
        e_hi=127 - spec.emax,
        special_min=int(special.min()) if special.size else 256,
        subtab=sub.astype(np.uint16).tolist(),
    )
