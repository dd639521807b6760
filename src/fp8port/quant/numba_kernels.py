"""The Numba kernels: where the C kernels are not built, and for what they leave (non-finite
blocks, HiF8 elements); one pass per row group computes block amax -> scale -> codes.

Bit-exact with reference.py (tests/quant compare them on adversarial data). How:
  * amax on integers: |x| of float32 (or bf16 << 16) bits orders like |x|, and NaN > Inf > finite,
    so the integer max propagates NaN exactly as np.max does;
  * scales: a power-of-two rule through its step form (steps.py); the float rule (v3_float)
    as fp32(max(amax, clamp) / max);
  * y = x * 2^-E for power-of-two scales (exact, so equal to x / 2^E), x / s or x * fp32(1/s)
    for float scales, in float32;
  * element code = LUT[round_to_odd_bf16(y)] (codec/tables.py).
Rows (or 128-row tiles) run in parallel with prange; `cache=True` keeps the compiled code.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_NAN_BITS = 0x7FC00000
_MANT = 0x7FFFFF


@njit(cache=True)
def _step_scale(steps, a):
    """float32 bits of the scale of amax bits `a` through a step table (steps.py)."""
    if a == 0:
        return np.int64(steps[1792])
    f = a >> 23
    m = a & _MANT
    k = np.int64(m >= steps[3 * f]) + np.int64(m >= steps[3 * f + 1]) + np.int64(m >= steps[3 * f + 2])
    return np.int64(steps[768 + 4 * f + k])


@njit(cache=True)
def _block_scale(au, steps, maxv, clamp, use_clamp, zero_unit, tu, tf):
    """float32 bits of a block's scale: the step form when given (a power-of-two rule), else
    v3_float's fp32(max(amax, clamp) / max)."""
    if steps.size > 1:
        return _step_scale(steps, au)
    if zero_unit and au == 0:
        return 0x3F800000
    tu[0] = au
    a = tf[0]
    if use_clamp and au <= 0x7F800000 and a < clamp:
        a = clamp
    tf[0] = a / maxv
    rb = np.int64(tu[0])
    return _NAN_BITS if (rb & 0x7FFFFFFF) > 0x7F800000 else rb


@njit(cache=True)
def _pow2_bits(e):
    if e >= -126:
        return (e + 127) << 23
    return 0x00400000


@njit(cache=True, inline="always")
def _row_group(t, gm, bm, m):
    """Work item t of a kernel's prange: (batch, row-block, first row, end row)."""
    b = t // gm
    g = t - b * gm
    r0 = g * bm
    return b, g, r0, min(r0 + bm, m)


@njit(parallel=True, cache=True)
def _quantize_kernel(x, shift, bm, bn, steps, maxv, clamp, use_clamp, zero_unit, mode, lut, codes, sgrid, bad):
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
            sb = _block_scale(amax[cb], steps, maxv, clamp, use_clamp, zero_unit, tu, tf)
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
def _quantize_bf16_pow2(x, bm, steps, lut, cap, codes, sgrid, bad):
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
            sb = _step_scale(steps, np.int64(amax[g]) << 16)
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
