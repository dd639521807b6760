"""Triton quantize / dequantize for E4M3 elements with power-of-two block scales.

Covered (bit-exact with quant/reference.py):
  * UE8M0 (DeepSeek-V3.1 / DeepGEMM): 2^ceil(log2(max(amax, clamp) / 448)), 1xB vectors along
    the last axis or BRxBC tiles over the last two axes (1x128 activations, 128x128 weights);
  * FLOOR (OCP MX): 2^(floor(log2 amax) - 8), 1xB vectors (MXFP8 1x32), E8M0 bytes.

Everything that decides a byte is integer arithmetic on float32 bit patterns, for two reasons:
the Triton interpreter's fp32 -> float8e4nv cast is wrong (ties, carries, overflow, NaN,
subnormals; shared/NOTES.md §5), and fp32 division on NVIDIA is `div.full` (approximate), so
neither the hardware cast nor `/` is trusted for bytes. Scales are powers of two, so x / s is
an exponent subtraction on the bits, exact on every backend.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ..quant.steps import BitsRule

RULE_UE8M0 = tl.constexpr(int(BitsRule.UE8M0))  # the RULE argument's values (one numbering for every backend)
RULE_FLOOR = tl.constexpr(int(BitsRule.FLOOR))
CAP_NAN = 0x7F  # overflow -> NaN code (ml_dtypes; the DeepSeek presets)
CAP_SAT = 0x7E  # overflow -> +-448 (OCP MX clamp)


@triton.jit
def pow2_f32(e):
    """float32 2^e for int32 e in [-127, 127] (2^-127 is the subnormal 0x00400000)."""
    bits = tl.where(e >= -126, (e + 127) << 23, 0x00400000)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def scale_exponent(ab, clamp_bits, lo, hi, RULE: tl.constexpr, EMAX: tl.constexpr):
    """(E, nan) of blocks whose |amax| has float32 bits `ab` (int32; NaN > Inf > finite).

    UE8M0: r = fp32(a / 448) never rounds across a power of two for normal a (448 = 7 * 2^6,
    so a / 448 lies at least 2^-23.8 relative from any 2^k), hence
    ceil(log2 r) = ceil(log2(a / 448)) = exponent(a) - 8 + (mantissa(a) > 1.75), with no
    division. Inf / NaN amax reads as exponent 128 and is clamped to `hi` (DeepGEMM).
    FLOOR: floor(log2 a) - EMAX; a subnormal amax is below every allowed exponent; Inf / NaN
    amax makes a NaN block (E8M0 0xFF).
    """
    ab = tl.maximum(ab, clamp_bits)  # integer max on |x| bits: keeps NaN like np.maximum
    f = ab >> 23
    if RULE == RULE_UE8M0:
        e = f - 127 - EMAX + ((ab & 0x7FFFFF) > 0x600000).to(tl.int32)
        e = tl.where(f == 255, 128, e)
        nan = ab < 0  # all false, same shape
    else:
        e = tl.where(f == 0, lo, f - 127 - EMAX)
        nan = ab >= 0x7F800000
    e = tl.minimum(tl.maximum(e, lo), hi)
    return e, nan


@triton.jit
def e4m3_encode(u, e, nan_block, CAP: tl.constexpr):
    """E4M3 code (int32) of x / 2^e, round to nearest even, for x given as float32 bits `u`.

    CAP 0x7E saturates overflow to +-448, 0x7F turns it into NaN. nan_block: the block's scale
    is NaN, so every element is NaN (a NaN input keeps its sign, others give +NaN as x / NaN).
    """
    sign = (u >> 31) & 1
    a = u & 0x7FFFFFFF
    f = a >> 23
    # |y| = |x| * 2^-e as float32 bits: an exponent subtraction for normal x; results below
    # 2^-126 encode to zero anyway. Subnormal x (only MX blocks with a subnormal amax reach
    # a nonzero code) is rebuilt from its integer mantissa, which is exact.
    ysub = (a & 0x7FFFFF).to(tl.float32) * pow2_f32(tl.minimum(tl.maximum(-149 - e, -126), 0))
    yb = tl.where(f - e >= 1, a - (e << 23), 0)
    yb = tl.where(f == 0, ysub.to(tl.int32, bitcast=True), yb)
    yb = tl.where(f == 255, 0x7F800000, yb)  # Inf (NaN is handled below)
    fy = yb >> 23
    # normal E4M3 (|y| >= 2^-6): drop 20 mantissa bits with RNE; a carry moves the exponent
    nrm = ((yb + 0x7FFFF + ((yb >> 20) & 1)) >> 20) - (120 << 3)
    # subnormal E4M3: round |y| * 2^9 = m24 * 2^(fy - 141) to an integer, RNE
    m24 = (yb & 0x7FFFFF) | 0x800000
    sh = tl.minimum(tl.maximum(141 - fy, 1), 26)
    sub = (m24 + (1 << (sh - 1)) - 1 + ((m24 >> sh) & 1)) >> sh
    c = tl.where(fy >= 121, tl.minimum(nrm, CAP), sub)
    is_nan = a > 0x7F800000
    c = tl.where(is_nan, 0x7F, c)
    sign = tl.where(nan_block & ~is_nan, 0, sign)
    c = tl.where(nan_block, 0x7F, c)
    return c | (sign << 7)


@triton.jit
def e4m3_decode(code):
    """float32 value of E4M3 codes (int32 0..255); 0x7F / 0xFF are NaN."""
    c = code & 0x7F
    ex = c >> 3
    m = c & 7
    nrm = (((ex + 120) << 23) | (m << 20)).to(tl.float32, bitcast=True)
    v = tl.where(ex > 0, nrm, m.to(tl.float32) * 0.001953125)  # subnormal: m * 2^-9, exact
    v = tl.where(c == 0x7F, float("nan"), v)
    return tl.where((code & 0x80) != 0, -v, v)


@triton.jit
def load_bits(ptr, mask, IN_BF16: tl.constexpr):
    """float32 bits (int32) of float32 inputs, or of bf16 inputs passed as int16 bits."""
    if IN_BF16:
        return (tl.load(ptr, mask=mask, other=0).to(tl.int32) & 0xFFFF) << 16
    return tl.load(ptr, mask=mask, other=0.0).to(tl.int32, bitcast=True)


@triton.jit
def bf16_bits(y):
    """bf16 bits (int16) of float32 y, round to nearest even, NaN kept (quiet, signed)."""
    u = y.to(tl.int32, bitcast=True)
    a = u & 0x7FFFFFFF
    r = (a + 0x7FFF + ((a >> 16) & 1)) >> 16
    r = tl.where(a > 0x7F800000, (a >> 16) | 0x40, r)
    r = r | ((u >> 16) & 0x8000)
    return tl.where(r >= 0x8000, r - 0x10000, r).to(tl.int16)


@triton.jit
def _write_scales(s_ptr, b_ptr, off, mask, e, nan, WRITE_BYTES: tl.constexpr):
    s = tl.where(nan, float("nan"), pow2_f32(e))
    tl.store(s_ptr + off, s, mask=mask)
    if WRITE_BYTES:  # E8M0 byte: biased exponent, 0xFF for NaN
        tl.store(b_ptr + off, tl.where(nan, 255, e + 127).to(tl.uint8), mask=mask)


@triton.jit
def quant_vec_kernel(
    x_ptr,
    q_ptr,
    s_ptr,
    b_ptr,
    M,
    K,
    G,
    clamp_bits,
    lo,
    hi,
    B: tl.constexpr,
    ROWS: tl.constexpr,
    GROUPS: tl.constexpr,
    RULE: tl.constexpr,
    EMAX: tl.constexpr,
    CAP: tl.constexpr,
    IN_BF16: tl.constexpr,
    WRITE_BYTES: tl.constexpr,
):
    """1xB blocks along the last axis of a contiguous (M, K) tensor; scales (M, G)."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    grp = tl.program_id(1) * GROUPS + tl.arange(0, GROUPS)
    cols = grp[None, :, None] * B + tl.arange(0, B)[None, None, :]
    rows3 = rows[:, None, None].to(tl.int64)
    mask = (rows3 < M) & (cols < K)
    u = load_bits(x_ptr + rows3 * K + cols, mask, IN_BF16)
    e, nan = scale_exponent(tl.max(u & 0x7FFFFFFF, axis=2), clamp_bits, lo, hi, RULE, EMAX)
    smask = (rows[:, None] < M) & (grp[None, :] < G)
    _write_scales(s_ptr, b_ptr, rows[:, None].to(tl.int64) * G + grp[None, :], smask, e, nan, WRITE_BYTES)
    code = e4m3_encode(u, e[:, :, None], nan[:, :, None], CAP)
    tl.store(q_ptr + rows3 * K + cols, code.to(tl.uint8), mask=mask)


@triton.jit
def quant_tile_kernel(
    x_ptr,
    q_ptr,
    s_ptr,
    b_ptr,
    M,
    N,
    GM,
    GN,
    clamp_bits,
    lo,
    hi,
    BR: tl.constexpr,
    BC: tl.constexpr,
    RULE: tl.constexpr,
    EMAX: tl.constexpr,
    CAP: tl.constexpr,
    IN_BF16: tl.constexpr,
    WRITE_BYTES: tl.constexpr,
):
    """One BRxBC tile per program over the last two axes of a contiguous (batch, M, N) tensor."""
    tm, tn, bt = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    rows = tm * BR + tl.arange(0, BR)
    cols = tn * BC + tl.arange(0, BC)
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    off = bt * M * N + rows[:, None].to(tl.int64) * N + cols[None, :]
    u = load_bits(x_ptr + off, mask, IN_BF16)
    e, nan = scale_exponent(tl.max(tl.max(u & 0x7FFFFFFF, axis=1), axis=0), clamp_bits, lo, hi, RULE, EMAX)
    s = tl.where(nan, float("nan"), pow2_f32(e))
    soff = bt * GM * GN + tm * GN + tn
    tl.store(s_ptr + soff, s)
    if WRITE_BYTES:
        tl.store(b_ptr + soff, tl.where(nan, 255, e + 127).to(tl.uint8))
    tl.store(q_ptr + off, e4m3_encode(u, e, nan, CAP).to(tl.uint8), mask=mask)


@triton.jit
def dequant_kernel(
    q_ptr,
    s_ptr,
    o_ptr,
    M,
    N,
    GM,
    GN,
    BR: tl.constexpr,
    BC: tl.constexpr,
    TM: tl.constexpr,
    TN: tl.constexpr,
    OUT_BF16: tl.constexpr,
):
    """out = decode(code) * s[row // BR, col // BC] in float32 (then bf16, RNE) over a
    contiguous (batch, M, N) code tensor and its (batch, GM, GN) float32 scale grid."""
    bt = tl.program_id(2).to(tl.int64)
    rows = tl.program_id(0) * TM + tl.arange(0, TM)
    cols = tl.program_id(1) * TN + tl.arange(0, TN)
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    off = bt * M * N + rows[:, None].to(tl.int64) * N + cols[None, :]
    code = tl.load(q_ptr + off, mask=mask, other=0).to(tl.int32)
    soff = bt * GM * GN + (rows // BR)[:, None] * GN + (cols // BC)[None, :]
    y = e4m3_decode(code) * tl.load(s_ptr + soff, mask=mask, other=1.0)
    if OUT_BF16:
        tl.store(o_ptr + off, bf16_bits(y), mask=mask)
    else:
        tl.store(o_ptr + off, y, mask=mask)


# ---- host launchers (torch tensors on the device the kernels run on) ----------------------


def _bits_input(x):
    """(tensor the kernel reads, IN_BF16): bf16 as its int16 bits, everything else float32."""
    import torch

    x = x.contiguous()
    if x.dtype == torch.bfloat16:
        return x.view(torch.int16), True
    return x.float().contiguous(), False  # float16 / float64 round to float32 first, as the API


def quantize_vec(
    x,
    block: int,
    *,
    rule: int,
    emax: int,
    cap: int,
    clamp_bits: int,
    lo: int,
    hi: int,
    write_bytes: bool,
    rows: int = 16,
    groups: int | None = None,
):
    """1 x `block` blocks along the last axis of x (M, K): (codes uint8, s fp32 (M, G), bytes)."""
    import torch

    xin, in_bf16 = _bits_input(x)
    m, k = xin.shape
    g = -(-k // block)
    codes = torch.empty((m, k), dtype=torch.uint8, device=x.device)
    s = torch.empty((m, g), dtype=torch.float32, device=x.device)
    b = torch.empty((m, g), dtype=torch.uint8, device=x.device) if write_bytes else s
    groups = groups or max(1, 512 // block)
    grid = (triton.cdiv(m, rows), triton.cdiv(g, groups))
    quant_vec_kernel[grid](
        xin,
        codes,
        s,
        b,
        m,
        k,
        g,
        clamp_bits,
        lo,
        hi,
        B=block,
        ROWS=rows,
        GROUPS=groups,
        RULE=rule,
        EMAX=emax,
        CAP=cap,
        IN_BF16=in_bf16,
        WRITE_BYTES=write_bytes,
        num_warps=4,
    )
    return codes, s, (b if write_bytes else None)


def quantize_tile(
    x, br: int, bc: int, *, rule: int, emax: int, cap: int, clamp_bits: int, lo: int, hi: int, write_bytes: bool
):
    """br x bc tiles over the last two axes of x (batch, M, N): (codes, s (batch, GM, GN), bytes)."""
    import torch

    xin, in_bf16 = _bits_input(x)
    nb, m, n = xin.shape
    gm, gn = -(-m // br), -(-n // bc)
    codes = torch.empty((nb, m, n), dtype=torch.uint8, device=x.device)
    s = torch.empty((nb, gm, gn), dtype=torch.float32, device=x.device)
    b = torch.empty((nb, gm, gn), dtype=torch.uint8, device=x.device) if write_bytes else s
    quant_tile_kernel[(gm, gn, nb)](
        xin,
        codes,
        s,
        b,
        m,
        n,
        gm,
        gn,
        clamp_bits,
        lo,
        hi,
        BR=br,
        BC=bc,
        RULE=rule,
        EMAX=emax,
        CAP=cap,
        IN_BF16=in_bf16,
        WRITE_BYTES=write_bytes,
        num_warps=8,
    )
    return codes, s, (b if write_bytes else None)


def dequantize(codes, s, br: int, bc: int, *, out_bf16: bool, tm: int = 32, tn: int = 128):
    """codes (batch, M, N) uint8, s (batch, GM, GN) float32 -> float32 or bfloat16 values."""
    import torch

    codes, s = codes.contiguous(), s.float().contiguous()
    nb, m, n = codes.shape
    gm, gn = s.shape[1], s.shape[2]
    out = torch.empty((nb, m, n), dtype=torch.bfloat16 if out_bf16 else torch.float32, device=codes.device)
    grid = (triton.cdiv(m, tm), triton.cdiv(n, tn), nb)
    dequant_kernel[grid](
        codes,
        s,
        out.view(torch.int16) if out_bf16 else out,
        m,
        n,
        gm,
        gn,
        BR=br,
        BC=bc,
        TM=tm,
        TN=tn,
        OUT_BF16=out_bf16,
        num_warps=4,
    )
    return out
