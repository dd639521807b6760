"""The fused weight-only linear kernels (gemm.c): the ctypes view of their parameters and the calls.

`runner` gives the GEMV: y = x W^T (+ bias) for a few activation rows straight from W's codes and
block scales, on a layer's prepared plan; `decode_rows` writes rows of the dequantized W into a
caller's buffer (bit-exact with the reference dequantize) for the prefill path, which multiplies one
cache-sized chunk at a time. nn/fused.py fills the parameters from a layer's scheme.
"""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from functools import cache, lru_cache

from .. import cpu as _cpu
from ..names import NamedEnum
from . import _BIT, Isa, _lib, _t, tier

_i64, _i32, _f32, _ptr = ctypes.c_int64, ctypes.c_int32, ctypes.c_float, ctypes.c_void_p


class Decoder(NamedEnum):
    """gemv_t.dec: how a vector of codes becomes float32 values (gemm.h)."""

    __label__ = "GEMV decoder"
    FLOAT = "float"  # 8-bit sign-bit float formats, by arithmetic
    INT8 = "int8"  # a signed byte times the value of code 1
    TAB16 = "tab16"  # 4-bit codes, one per byte: a 16-entry table in registers
    NIB = "nib"  # 4-bit codes, two per byte (low nibble first)
    FP6 = "fp6"  # 6-bit codes, four in three bytes (bit stream), by arithmetic
    GATHER = "gather"  # any byte code: a gather from the 256-entry table


DECODER_ID = {d: i for i, d in enumerate(Decoder)}  # the order of gemm.c's GM_* enum


class Gemv(ctypes.Structure):
    """gemv_t: one weight and one call's activations and output (pointers are addresses)."""

    _fields_ = [
        ("codes", _ptr),
        ("N", _i64),
        ("K", _i64),
        ("row_bytes", _i64),
        ("bm", _i64),
        ("bn", _i64),
        ("sgrid", _ptr),
        ("dec", _i32),
        ("lsh", _i32),
        ("rsh", _i32),
        ("keep", ctypes.c_uint32),
        ("fmul", _f32),
        ("tab16", _f32 * 16),
        ("lut", _ptr),
        ("bias", _ptr),
        ("x", _ptr),
        ("x_bf16", _i32),
        ("M", _i64),
        ("ldx", _i64),
        ("y", _ptr),
        ("y_bf16", _i32),
        ("ldy", _i64),
        ("bf16_ok", _i32),
        ("bf_sh", _i32),
        ("bf_keep", ctypes.c_uint32),
        ("bf_rebias", ctypes.c_uint32),
        ("bf_expmask", ctypes.c_uint32),
        ("bf_tab", ctypes.c_uint16 * 32),
        ("amx_ok", _i32),
        ("amx_c", _f32),
        ("amx_sgrid", _ptr),
        ("amx_crow", _ptr),
    ]


@lru_cache(maxsize=1)
def _gemm_lib():
    lib = _lib()
    if lib is None:
        return None
    lib.fp8_gemv.argtypes = [ctypes.POINTER(Gemv), _i32, _i32, _i32]
    lib.fp8_gemv.restype = ctypes.c_int
    lib.fp8_gemv_run.argtypes = [_ptr, _ptr, _ptr, _i64, _i32, _i32, _i32, _ptr]
    lib.fp8_gemv_run.restype = ctypes.c_int
    lib.fp8_decode_rows.argtypes = [ctypes.POINTER(Gemv), _i64, _i64, _ptr, _i32, _i32, _i32, _f32]
    lib.fp8_decode_rows.restype = _i32
    lib.fp8_gemm_lanes.argtypes = [_i32]
    lib.fp8_gemm_lanes.restype = _i64
    lib.fp8_gemm_bf16dot.restype = ctypes.c_int
    lib.fp8_gemm_amx.restype = ctypes.c_int
    return lib


@cache
def _env_tier(want: str | None) -> int:
    """cpu.tier()'s number for this FP8PORT_ISA where no tier is forced (-1: none); read once per value."""
    t = tier()
    return -1 if t is None else _BIT[t]


def _tier_now() -> int:
    """cpu.tier()'s number (-1: none), cheap enough for every layer call (the GEMV of a small layer
    takes a few microseconds)."""
    f = _cpu._forced
    if f is not _cpu._UNSET:
        return -1 if f is None else _BIT[f]
    return _env_tier(os.environ.get("FP8PORT_ISA"))


def available() -> bool:
    return _gemm_lib() is not None and _tier_now() >= 0


def lanes() -> int:
    """float32 lanes of the current tier's vectors (blocks along K should be a multiple of 16)."""
    return int(_gemm_lib().fp8_gemm_lanes(_tier_now()))


_bf16_dot_on = True


@contextmanager
def bf16_dot(on: bool):
    """Allow (or not) the avx512 tier's bf16 dot-product route inside the block (tests, benchmarks)."""
    global _bf16_dot_on
    before, _bf16_dot_on = _bf16_dot_on, on
    try:
        yield
    finally:
        _bf16_dot_on = before


def has_bf16_dot() -> bool:
    """Whether bf16 activations take the AVX-512 BF16 route here (vdpbf16ps): the CPU has it, the
    avx512 tier runs, and it is not switched off."""
    return _bf16_dot_on and tier() is Isa.AVX512 and bool(_gemm_lib().fp8_gemm_bf16dot())


_amx_on = os.environ.get("FP8PORT_AMX", "1") != "0"  # FP8PORT_AMX=0: the avx512 tier without AMX


@contextmanager
def amx(on: bool):
    """Allow (or not) the avx512 tier's AMX route inside the block (tests, benchmarks)."""
    global _amx_on
    before, _amx_on = _amx_on, on
    try:
        yield
    finally:
        _amx_on = before


@cache
def _cpu_amx() -> bool:
    return bool(_gemm_lib().fp8_gemm_amx())


def has_amx() -> bool:
    """Whether bf16 activations may take the AMX route here (TDPBF16PS): the CPU has AMX-BF16, the kernel
    lets this process use the tiles, the avx512 tier runs, and it is not switched off (FP8PORT_AMX=0,
    amx(False))."""
    return _amx_on and tier() is Isa.AVX512 and _cpu_amx()


def runner():
    """fp8_gemv_run(plan address, x address, y address, M, flags, tier, threads, bias address or None):
    one call of a prepared plan (nn/fused.py), nonzero without memory. flags: 1 bf16 activations and
    output (else float32), 2 the BF16 route allowed, 4 the AMX route allowed (where the plan has amx_ok)."""
    return _gemm_lib().fp8_gemv_run


def gemv_threads(work: int) -> int:
    """Threads for a GEMV of `work` = N * K * M codes times rows: one below 2^18 (OpenMP's wake-up
    costs more than the second thread saves there), then one per 2^17. SmolLM2's 576x576 at M = 1
    (2^18.3) takes two: 12.5 -> 9.4 us (MXFP4, the second core idle; a quiet machine's README figures
    showed two threads ahead from 1536x576 on)."""
    return 1 if work < 1 << 18 else _t(work >> 17)


def plan_state() -> tuple:
    """What a prepared plan's tier and thread counts were read under: they are read again when this
    changes (cpu.forced entered or left, a fork)."""
    return _cpu._forced, _cpu._forked


def decode_rows(g: Gemv, n0: int, n1: int, out: int, bf16: bool, threads: int | None = None, smul: float = 0.0) -> None:
    """Rows [n0, n1) of the dequantized weight into the buffer at address `out` (float32 or bf16 bits).

    smul: if not 0, each scale s is taken as bf16(s * smul) (nn/prefill.py's tensor split)."""
    t = _t((n1 - n0) * g.K >> 16) if threads is None else threads
    if _gemm_lib().fp8_decode_rows(ctypes.byref(g), n0, n1, out, int(bf16), t, _tier_now(), smul):
        raise MemoryError("fp8port: no memory for decode_rows' scale grid")
