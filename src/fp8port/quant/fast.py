"""Fused CPU kernels (Numba): one pass per row group computes block amax -> scale -> codes.

Bit-exact with reference.py (tests/quant compare them on adversarial data). How:
  * amax on integers: |x| of float32 (or bf16 << 16) bits orders like |x|, and NaN > Inf > finite,
    so the integer max propagates NaN exactly as np.max does;
  * scale rules from float32 bits (the same formulas as rules.py; float32 division where the
    rule divides);
  * y = x * 2^-E for power-of-two scales (exact, so equal to x / 2^E), x / s or x * fp32(1/s)
    for float scales, in float32;
  * element code = LUT[round_to_odd_bf16(y)]: rounding y to bf16 with a sticky bit, then to a
    format of <= 6 significand bits, equals rounding y directly (round-to-odd double-rounding
    theorem), so a 65,536-entry table built with the codec reference encodes any float32.
Rows (or 128-row tiles) run in parallel with prange; `cache=True` keeps the compiled code.
bf16 or float32 input with power-of-two scales and E4M3 elements goes to the AVX-512 C kernels
(native.py) where they were built and the CPU has them; these Numba kernels do the rest.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit, prange

from ..codec.reference import decode, encode
from ..formats import Kind
from ..codec.policy import Overflow, Rounding
from . import buffers, native
from .rules import ScaleRule
from .scheme import Apply, BlockKind, Scheme, ScaleStorage, ZeroBlock

_RULE_ID = {ScaleRule.UE8M0: 0, ScaleRule.V3_FLOAT: 1, ScaleRule.FLOOR: 2, ScaleRule.CEIL: 3,
            ScaleRule.EVEN: 4, ScaleRule.RCEIL: 5}
_NAN_BITS = 0x7FC00000
_MANT = 0x7FFFFF


def unsupported_reason(scheme: Scheme) -> str | None:
    """Why the fast path cannot run this scheme (None: it can)."""
    if scheme.scale_rule not in _RULE_ID:
        return f"scale rule {scheme.scale_rule.value} has no fast kernel (reference only)"
    if scheme.rules.rounding is Rounding.STOCHASTIC:
        return "stochastic rounding has no fast kernel"
    if scheme.element.kind is Kind.INT or scheme.element.mbits > 5:
        return f"element {scheme.element.name} has more than 6 significand bits (LUT encode needs <= 6)"
    if scheme.storage is ScaleStorage.BFLOAT16 and not scheme.scale_rule.power_of_two:
        return "bfloat16 storage of float scales rounds the scale (reference only)"
    return None


@lru_cache(maxsize=64)
def encode_lut(spec, rules) -> np.ndarray:
    """Code of every bf16 bit pattern (65,536 entries) under the codec reference."""
    pats = (np.arange(65536, dtype=np.uint32) << 16).view(np.float32)
    with np.errstate(invalid="ignore"):  # NaN patterns are expected here
        return encode(pats.astype(np.float64), spec, rules)


@lru_cache(maxsize=64)
def decode_lut(spec) -> np.ndarray:
    return decode(np.arange(256), spec) if spec.bits == 8 else decode(np.arange(1 << spec.bits), spec)


@njit(cache=True)
def _pow2_bits(e):
    if e >= -126:
        return (e + 127) << 23
    return 0x00400000


@njit(cache=True)
def _bitlen(m):
    n = 0
    while m > 0:
        m >>= 1
        n += 1
    return n


@njit(cache=True)
def _block_scale(au, rule, maxv, clamp, use_clamp, lo, hi, emax, mbits, zero_unit, tu, tf):
    """float32 bits of the scale of a block with |amax| bits `au` (int64); see rules.py."""
    if zero_unit and au == 0:
        return 0x3F800000
    tu[0] = au
    a = tf[0]
    if use_clamp and au <= 0x7F800000 and a < clamp:
        a = clamp
    tf[0] = a
    ab = np.int64(tu[0])
    if rule == 0 or rule == 1 or rule == 5:
        tf[0] = a / maxv
        rb = np.int64(tu[0])
        if rule == 1:
            return _NAN_BITS if (rb & 0x7FFFFFFF) > 0x7F800000 else rb
        f = (rb >> 23) & 0xFF
        m = rb & _MANT
        if rule == 0:
            e = f + (1 if m != 0 else 0) - 127
        else:
            if ab > 0x7F800000:
                return _NAN_BITS
            if f == 255:
                e = 254 - 127
            else:
                up = m > 0 and f != 254 and not (f == 0 and m <= 0x400000)
                e = f + (1 if up else 0) - 127
    else:
        if ab >= 0x7F800000:
            return _NAN_BITS
        f = ab >> 23
        m = ab & _MANT
        if rule == 4:
            f2 = ((ab + (1 << (22 - mbits))) >> 23) & 0xFF
            if f2 == 255:
                return _NAN_BITS
            e = f2 - 127 - emax
        elif ab == 0:
            e = lo
        else:
            if f == 0:
                fl = _bitlen(m) - 1 - 149
                exact = (m & (m - 1)) == 0
            else:
                fl = f - 127
                exact = m == 0
            if rule == 2:
                e = fl - emax
            else:
                e = fl + (0 if exact else 1) - emax
    if e < lo:
        e = lo
    if e > hi:
        e = hi
    return _pow2_bits(e)


@njit(cache=True)
def _fill_scale_steps(rule, maxv, clamp, use_clamp, lo, hi, emax, mbits, zero_unit, thr, sb):
    """Per float32 exponent field f, the mantissas where a block's scale steps up (the rule is
    monotone in amax) and the scale on each segment, found by bisection on _block_scale itself.
    False if some binade has more than three steps (the native kernel then stays unused)."""
    tu = np.empty(1, np.uint32)
    tf = tu.view(np.float32)
    for f in range(255):
        a = np.int64(f) << 23 if f > 0 else np.int64(1)  # amax 0 is steps' `zero`
        end = (np.int64(f) << 23) | _MANT
        cur = _block_scale(a, rule, maxv, clamp, use_clamp, lo, hi, emax, mbits, zero_unit, tu, tf)
        sb[f, 0] = cur
        k = 0
        while _block_scale(end, rule, maxv, clamp, use_clamp, lo, hi, emax, mbits, zero_unit, tu, tf) != cur:
            if k == 3:
                return False
            lo_a, hi_a = a, end  # the scale is cur at lo_a and differs at hi_a
            while hi_a - lo_a > 1:
                mid = (lo_a + hi_a) // 2
                if _block_scale(mid, rule, maxv, clamp, use_clamp, lo, hi, emax, mbits, zero_unit, tu, tf) == cur:
                    lo_a = mid
                else:
                    hi_a = mid
            thr[f, k] = hi_a & _MANT
            a = hi_a
            cur = _block_scale(a, rule, maxv, clamp, use_clamp, lo, hi, emax, mbits, zero_unit, tu, tf)
            k += 1
            sb[f, k] = cur
        for j in range(k, 3):
            thr[f, j] = 1 << 23  # above every mantissa: never reached
        for j in range(k + 1, 4):
            sb[f, j] = cur
    thr[255, :] = 1 << 23  # Inf / NaN amax: the general kernel's
    sb[255, :] = _NAN_BITS
    return True


@lru_cache(maxsize=32)
def scale_steps(args: tuple):
    """The native kernel's form of one scale rule (`args`: _block_scale's): a uint32 array laid out
    as its steps_t (thr[256][3], sb[256][4], zero), or None if the rule does not fit it."""
    thr, sb = np.empty((256, 3), np.uint32), np.empty((256, 4), np.uint32)
    if not _fill_scale_steps(*args, thr, sb):
        return None
    tu = np.empty(1, np.uint32)
    zero = _block_scale(0, *args, tu, tu.view(np.float32))
    return np.concatenate([thr.ravel(), sb.ravel(), np.array([zero], np.uint32)])


@njit(cache=True, inline="always")
def _row_group(t, gm, bm, m):
    """Work item t of a kernel's prange: (batch, row-block, first row, end row)."""
    b = t // gm
    g = t - b * gm
    r0 = g * bm
    return b, g, r0, min(r0 + bm, m)


@njit(parallel=True, cache=True)
def _quantize_kernel(x, shift, bm, bn, rule, maxv, clamp, use_clamp, lo, hi, emax, mbits, zero_unit,
                     mode, lut, codes, sgrid, bad):
    """mode 0: y = x * 2^-E (power of two); 1: y = x / s; 2: y = x * fp32(1/s)."""
    B, M, N = x.shape
    gm = (M + bm - 1) // bm
    gn = (N + bn - 1) // bn
    for t in prange(B * gm):
        b, g, r0, r1 = _row_group(t, gm, bm, M)
        amax = np.zeros(gn, np.int64)
        for r in range(r0, r1):
            for cb in range(gn):
                c0 = cb * bn
                c1 = min(c0 + bn, N)
                mx = amax[cb]
                for j in range(c0, c1):
                    v = (np.int64(x[b, r, j]) << shift) & 0x7FFFFFFF
                    mx = max(mx, v)
                amax[cb] = mx
        tu = np.empty(1, np.uint32)
        tf = tu.view(np.float32)
        mul_u = np.empty(gn, np.uint32)
        mul_f = mul_u.view(np.float32)
        for cb in range(gn):
            if amax[cb] >= 0x7F800000:
                bad[t] = 1
            sb = _block_scale(amax[cb], rule, maxv, clamp, use_clamp, lo, hi, emax, mbits, zero_unit, tu, tf)
            tu[0] = sb
            s = tf[0]
            sgrid[b, g, cb] = s
            if mode == 0:
                if sb == _NAN_BITS:
                    mul_u[cb] = _NAN_BITS
                else:
                    e = (sb >> 23) - 127 if sb >= 0x00800000 else -127
                    mul_u[cb] = _pow2_bits(-e)
            elif mode == 1:
                mul_f[cb] = s
            else:
                mul_f[cb] = np.float32(1.0) / s
        buf = np.empty(bn, np.uint32)
        bf = buf.view(np.float32)
        for r in range(r0, r1):
            for cb in range(gn):
                c0 = cb * bn
                n = min(c0 + bn, N) - c0
                for j in range(n):
                    buf[j] = np.int64(x[b, r, c0 + j]) << shift
                mv = mul_f[cb]
                if mv != mv:  # NaN block: NaN inputs keep themselves (as reference._apply)
                    for j in range(n):
                        if not bf[j] != bf[j]:
                            bf[j] = mv
                elif mode == 1:
                    for j in range(n):
                        bf[j] = bf[j] / mv
                else:
                    for j in range(n):
                        bf[j] = bf[j] * mv
                for j in range(n):
                    u = np.int64(buf[j])
                    codes[b, r, c0 + j] = lut[(u >> 16) | (1 if (u & 0xFFFF) != 0 else 0)]


@njit(cache=True, inline="always")
def _e4m3_from_bf16(v, cap):
    """E4M3 code (RNE) of the non-negative bf16 pattern v (int32; <= 0x7F: zero), from
    integer operations only so that the loop around it vectorizes. cap: 0x7E saturates,
    0x7F turns overflow into NaN."""
    be = v >> np.int32(7)
    nrm = ((v + np.int32(7) + ((v >> np.int32(4)) & np.int32(1))) >> np.int32(4)) - np.int32(960)
    mant = (v & np.int32(127)) | np.int32(128)  # subnormal E4M3: round mant * 2^(be-125)
    sh = min(max(np.int32(125) - be, np.int32(5)), np.int32(9))
    sub = (mant + (np.int32(1) << (sh - np.int32(1))) - np.int32(1) + ((mant >> sh) & np.int32(1))) >> sh
    c = min(nrm, cap) if be >= np.int32(121) else sub
    return c if v >= np.int32(0x80) else np.int32(0)


@njit(cache=True, inline="always")
def _scaled_bf16(bits, sub):
    """(pattern p, |p| divided by 2^E as a bf16 pattern, or 0 below the normal range) for one
    bf16 element and sub = E << 7."""
    p = np.int32(bits)
    m = p & np.int32(0x7FFF)
    v = m - sub
    return p, (v if (m >= np.int32(0x80)) & (v >= np.int32(0x80)) else np.int32(0))


@njit(parallel=True, cache=True)
def _quantize_bf16_pow2(x, bm, rule, maxv, clamp, use_clamp, lo, hi, emax, mbits, zero_unit,
                        lut, cap, codes, sgrid, bad):
    """x: bf16 bits (B, M, G, bn) with whole blocks of bn along the last axis; blocks of
    bm rows. A power-of-two scale 2^E makes x * 2^-E exact: the bf16 pattern with E
    subtracted from its exponent field. Blocks must be finite and E >= -102 (so that a
    bf16 subnormal, which has no implicit 1, lands below every element's half-step);
    other blocks are flagged in `bad` and redone by the general kernel. All inner loops
    run over a whole block with plain indices, which LLVM vectorizes."""
    B, M, G, bn = x.shape
    gm = (M + bm - 1) // bm
    for t in prange(B * gm):
        b, rg, r0, r1 = _row_group(t, gm, bm, M)
        amax = np.zeros(G, np.uint16)  # 16-bit lanes: the widest vectors
        for r in range(r0, r1):
            for g in range(G):
                mx = amax[g]
                for j in range(bn):
                    mx = max(mx, x[b, r, g, j] & np.uint16(0x7FFF))
                amax[g] = mx
        tu = np.empty(1, np.uint32)
        tf = tu.view(np.float32)
        subs = np.zeros(G, np.int32)
        for g in range(G):
            sb = _block_scale(np.int64(amax[g]) << 16, rule, maxv, clamp, use_clamp, lo, hi, emax, mbits,
                              zero_unit, tu, tf)
            tu[0] = sb
            sgrid[b, rg, g] = tf[0]
            e = (sb >> 23) - 127 if sb >= 0x00800000 else -127
            if np.int64(amax[g]) >= 0x7F80 or sb == _NAN_BITS or e < -102:
                bad[t] = 1
            subs[g] = np.int32(e) << np.int32(7)
        if bad[t]:
            continue
        cap32 = np.int32(cap)  # an int64 here would widen every lane below
        if cap32 >= 0:  # two whole loop nests: a test inside the j loop stops vectorization
            for r in range(r0, r1):
                for g in range(G):
                    for j in range(bn):
                        p, v = _scaled_bf16(x[b, r, g, j], subs[g])
                        codes[b, r, g, j] = np.uint8(_e4m3_from_bf16(v, cap32) | ((p >> np.int32(8)) & np.int32(0x80)))
        else:
            for r in range(r0, r1):
                for g in range(G):
                    for j in range(bn):
                        p, v = _scaled_bf16(x[b, r, g, j], subs[g])
                        codes[b, r, g, j] = lut[(p & np.int32(0x8000)) | v]


@njit(parallel=True, cache=True)
def _dequantize_kernel(codes, bm, bn, sgrid, lut_f, to_bf16, out):
    B, M, N = codes.shape
    gm = (M + bm - 1) // bm
    gn = (N + bn - 1) // bn
    for t in prange(B * gm):
        b, g, r0, r1 = _row_group(t, gm, bm, M)
        buf = np.empty(bn, np.float32)
        bu = buf.view(np.uint32)
        for r in range(r0, r1):
            for cb in range(gn):
                c0 = cb * bn
                n = min(c0 + bn, N) - c0
                s = sgrid[b, g, cb]
                for j in range(n):
                    buf[j] = lut_f[codes[b, r, c0 + j]] * s
                if to_bf16:
                    for j in range(n):
                        u = np.int64(bu[j])
                        if (u & 0x7FFFFFFF) > 0x7F800000:
                            out[b, r, c0 + j] = (u >> 16) | 0x40
                        else:
                            out[b, r, c0 + j] = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
                else:
                    for j in range(n):
                        out[b, r, c0 + j] = bu[j]


def _layout(shape, scheme: Scheme):
    """(3-D view shape, bm, bn, axis moved to last or None) for the kernels."""
    blk = scheme.block
    nd = len(shape)
    if blk.kind is BlockKind.TILE:
        lead = int(np.prod(shape[:-2], dtype=np.int64))
        return (lead, shape[-2], shape[-1]), blk.size[0], blk.size[1], None
    if blk.kind is BlockKind.TENSOR:
        n = int(np.prod(shape, dtype=np.int64))
        return (1, 1, n), 1, max(n, 1), None
    ax = blk.axis % nd
    moved = None if ax == nd - 1 else ax
    last = shape[ax]
    rows = int(np.prod(shape, dtype=np.int64)) // max(last, 1)
    bn = blk.size[0] if blk.kind is BlockKind.VECTOR else max(last, 1)
    return (1, rows, last), 1, bn, moved


def _grid_back(sg: np.ndarray, shape, scheme: Scheme, moved):
    blk = scheme.block
    if blk.kind is BlockKind.TILE:
        return sg.reshape(tuple(shape[:-2]) + sg.shape[1:])
    if blk.kind is BlockKind.TENSOR:
        return sg.reshape((1,) * len(shape))
    if moved is None:
        return sg.reshape(tuple(shape[:-1]) + (sg.shape[-1],))
    mshape = tuple(np.delete(np.array(shape), moved)) + (sg.shape[-1],)
    return np.moveaxis(sg.reshape(mshape), -1, moved)


def quantize(x: np.ndarray, scheme: Scheme, codes_out: np.ndarray | None = None):
    """(codes like x, s_fp32 grid, any non-finite) for x as float32 or bf16 bits (uint16).
    codes_out: a C-contiguous uint8 array of x's shape to write the codes into (else allocated)."""
    shape = x.shape
    v3shape, bm, bn, moved = _layout(shape, scheme)
    if moved is not None:
        x = np.moveaxis(x, moved, -1)
    xs = np.ascontiguousarray(x)
    if xs.dtype == np.float32:
        xs = xs.view(np.uint32)
    shift = 16 if xs.dtype == np.uint16 else 0
    x3 = xs.reshape(v3shape)
    B, M, N = v3shape
    gm, gn = -(-M // bm), -(-N // bn)
    if codes_out is not None and moved is None:
        codes = codes_out.reshape(v3shape)  # a view: codes_out is C-contiguous
    else:
        codes = buffers.empty(v3shape, np.uint8)
    sgrid = buffers.empty((B, gm, gn), np.float32)
    bad = np.zeros(B * gm, np.uint8)
    rule = scheme.scale_rule
    pow2 = rule.power_of_two
    mode = 0 if pow2 else (2 if scheme.apply is Apply.RECIPROCAL else 1)
    el = scheme.element
    clamp = np.float32(scheme.amax_clamp if scheme.amax_clamp is not None else 0.0)
    args = (_RULE_ID[rule], np.float32(el.max), clamp, scheme.amax_clamp is not None, scheme.exp_range[0],
            scheme.exp_range[1], el.emax, el.mbits, scheme.zero_block is ZeroBlock.UNIT)
    lut = encode_lut(el, scheme.rules)
    cap = _e4m3_cap(el, scheme.rules)
    steps = scale_steps(args) if pow2 and N % bn == 0 and cap >= 0 and native.covers(bn, gn) else None
    if steps is not None:
        if native.quantize_pow2(x3, bm, bn, steps, cap, codes, sgrid):
            return _finish(codes, sgrid, xs.shape, shape, scheme, moved, False, codes_out)
    elif shift == 16 and pow2 and N % bn == 0:
        _quantize_bf16_pow2(x3.reshape(B, M, gn, bn), bm, *args, lut, cap,
                            codes.reshape(B, M, gn, bn), sgrid, bad)
        if not bad.any():
            return _finish(codes, sgrid, xs.shape, shape, scheme, moved, False, codes_out)
        bad[:] = 0  # some blocks need the general kernel: run it on everything (rare)
    _quantize_kernel(x3, shift, bm, bn, *args, mode, lut, codes, sgrid, bad)
    return _finish(codes, sgrid, xs.shape, shape, scheme, moved, bool(bad.any()), codes_out)


def _e4m3_cap(el, rules) -> int:
    """0x7E / 0x7F: E4M3 by integer code (saturating / overflow to NaN); -1: use the table."""
    ok = el.name == "float8_e4m3fn" and rules.rounding is Rounding.RNE and rules.nan_code == 0x7F
    if not ok or rules.overflow not in (Overflow.SATURATE, Overflow.NONFINITE):
        return -1
    return 0x7E if rules.overflow is Overflow.SATURATE else 0x7F


def _finish(codes, sgrid, xshape, shape, scheme, moved, bad, codes_out=None):
    codes = codes.reshape(xshape)
    if moved is not None:
        codes = np.moveaxis(codes, -1, moved)
        if codes_out is not None:
            np.copyto(codes_out, codes)
            codes = codes_out
    grid = np.ascontiguousarray(_grid_back(sgrid, shape, scheme, moved))
    return np.ascontiguousarray(codes), grid, bad


def dequantize(codes: np.ndarray, s_fp32: np.ndarray, scheme: Scheme, to_bf16: bool,
               out: np.ndarray | None = None) -> np.ndarray:
    """float32 values (or bf16 bits as uint16 when to_bf16), bit-exact with the reference.
    out: a C-contiguous uint16 / uint32 array of the codes' shape to write into (else allocated)."""
    shape = codes.shape
    v3shape, bm, bn, moved = _layout(shape, scheme)
    sg = np.asarray(s_fp32, np.float32)
    if moved is not None:
        codes = np.moveaxis(codes, moved, -1)
        sg = np.moveaxis(sg, moved, -1)
    cs = np.ascontiguousarray(codes).reshape(v3shape)
    B, M, N = v3shape
    sg3 = np.ascontiguousarray(sg).reshape(B, -(-M // bm), -(-N // bn))
    dst = out
    if out is None or moved is not None:
        out = buffers.empty(v3shape, np.uint16 if to_bf16 else np.uint32)
    else:
        out = out.reshape(v3shape)
    lut_f = decode_lut(scheme.element)
    # power-of-two scales by rule, or by value (a DeepSeek checkpoint read under the float rule)
    pow2 = scheme.scale_rule.power_of_two or not np.any(sg3.view(np.uint32) & _MANT)
    if not (pow2 and N % bn == 0 and native.covers(bn, N // bn, need=2)
            and native.dequantize_pow2(cs, bm, bn, sg3, lut_f, to_bf16, out)):
        _dequantize_kernel(cs, bm, bn, sg3, lut_f, to_bf16, out)
    out = out.reshape(codes.shape)
    if moved is not None:
        out = np.moveaxis(out, -1, moved)
        if dst is None:
            out = np.ascontiguousarray(out)
        else:
            np.copyto(dst, out)
            out = dst
    return out if to_bf16 else out.view(np.float32)
