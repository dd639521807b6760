"""The AVX-512 kernels of native.c: bf16 / float32 -> E4M3 with power-of-two block scales, and back.

Loaded through ctypes (which releases the GIL); the C entry points split the row groups over
`threads()` OpenMP threads. `level()` is 0 where the extension was not built (no C
compiler at install time), on CPUs without AVX-512, or with FP8PORT_NATIVE=0; fast.py then keeps
its Numba kernels (dequantize also needs AVX-512 VBMI: level 2). Bit-exact with reference.py
(tests/quant/test_fast_vs_reference.py runs both kernel families on adversarial data).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from functools import lru_cache

import numpy as np

_MAX_GN = 4096  # blocks per row group: the kernel's stack arrays
_STREAM_BYTES = 8 << 20  # outputs this large bypass the cache (non-temporal stores)


@lru_cache(maxsize=1)
def _lib():
    if os.environ.get("FP8PORT_NATIVE", "1") == "0":
        return None
    spec = importlib.util.find_spec(f"{__package__}._native")
    if spec is None or not spec.origin:
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
    except OSError:
        return None
    i64, i32, ptr = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
    lib.fp8_quant.restype = i64
    lib.fp8_quant.argtypes = [ptr, i32, i64, i64, i64, i64, i64, ptr, i32, i32, ptr, ptr, i32, i32]
    lib.fp8_dequant.restype = None
    lib.fp8_dequant.argtypes = [ptr, i64, i64, i64, i64, i64, ptr, ptr, ptr, i32, i32, i32, i32, ptr, i32]
    return lib


def level() -> int:
    """0: no native kernels; 1: quantize; 2: quantize and dequantize."""
    lib = _lib()
    return 0 if lib is None else lib.fp8_simd_level()


def fp16() -> bool:
    """Whether quantize rounds E4M3 subnormals with AVX512-FP16's fp16 -> int16 conversion (same
    bytes as the integer shifts, fewer instructions: it matters where many values are tiny)."""
    lib = _lib()
    return lib is not None and bool(lib.fp8_simd_fp16())


_forked = False


def _after_fork_in_child():
    global _forked
    _forked = True


# GNU OpenMP cannot start threads in a child forked after its parent used them (the child hangs,
# as torch's own kernels do); a forked child runs these kernels on its one thread instead.
os.register_at_fork(after_in_child=_after_fork_in_child)


def threads() -> int:
    """The thread count Numba uses (numba.set_num_threads sets both); 1 in a forked child."""
    import numba

    return 1 if _forked else numba.get_num_threads()


def _stream(a: np.ndarray, n: int, bn: int) -> int:
    return int(a.nbytes >= _STREAM_BYTES and a.ctypes.data % 64 == 0 and n % 64 == 0 and bn % 64 == 0)


def covers(bn: int, gn: int, need: int = 1) -> bool:
    return level() >= need and bn % 32 == 0 and 0 < gn <= _MAX_GN


def quantize_pow2(x, bm, bn, steps, cap, codes, sgrid) -> bool:
    """x: bf16 bits (uint16) or float32 bits (uint32), (B, M, N) with N a multiple of bn; steps:
    fast.scale_steps. False where some group needs the general kernel."""
    B, M, N = x.shape
    groups = B * -(-M // bm)
    bad = _lib().fp8_quant(x.ctypes.data, int(x.dtype.itemsize == 4), B, M, N, bm, bn, steps.ctypes.data, cap,
                           _stream(codes, N, bn), codes.ctypes.data, sgrid.ctypes.data, int(fp16()),
                           min(threads(), groups))
    return bad == 0


@lru_cache(maxsize=16)
def _dequant_tables(lut_f32_bytes: bytes):
    """(byte tables, lut32, e_lo, e_hi) for a 256-entry float32 decode table, or None where a
    value is not exactly a bf16 (then adding E << 7 would not be the float32 product)."""
    lut = np.frombuffer(lut_f32_bytes, np.float32).copy()
    u = lut.view(np.uint32)
    b16 = np.where((u & 0x7FFFFFFF) > 0x7F800000, (u >> 16) | 0x40,
                   (u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    if not np.array_equal(b16.astype(np.uint32) << 16, u):
        return None
    fin = ((b16 & 0x7FFF) > 0) & ((b16 & 0x7FFF) < 0x7F80)
    be = (b16[fin].astype(np.int64) & 0x7FFF) >> 7
    if be.size == 0:
        return None
    tab = np.concatenate([b16 & 0xFF, b16 >> 8]).astype(np.uint8)
    # every finite non-zero value times 2^E keeps a normal biased exponent (1..254)
    return tab, lut, int(1 - be.min()), int(254 - be.max())


def dequantize_pow2(codes, bm, bn, sgrid, lut_f32, to_bf16, out) -> bool:
    """codes (B, M, N) uint8 with power-of-two scales into out (B, M, N) uint16 (bf16 bits) or
    uint32 (float32 bits). False: not covered (the caller runs the Numba kernel)."""
    tabs = _dequant_tables(np.ascontiguousarray(lut_f32, np.float32).tobytes())
    if tabs is None or bn % 64:
        return False
    tab, lut, e_lo, e_hi = tabs
    B, M, N = codes.shape
    _lib().fp8_dequant(codes.ctypes.data, B, M, N, bm, bn, sgrid.ctypes.data, tab.ctypes.data, lut.ctypes.data,
                       e_lo, e_hi, int(to_bf16), _stream(out, N, bn), out.ctypes.data, min(threads(), B * -(-M // bm)))
    return True
