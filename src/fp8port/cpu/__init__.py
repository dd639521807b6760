"""The C kernels (native.c, built by `pip install` where a C compiler exists) and their ISA tiers.

One source compiled per tier: `scalar` (x86-64 baseline), `avx2` (AVX2+FMA+F16C+BMI2), `avx512`
(F/BW/VL/DQ) and `neon` (aarch64). `tier()` is the best tier the CPU runs, capped by the
environment: FP8PORT_ISA=scalar|avx2|avx512|neon forces a lower one (so one machine tests them
all), FP8PORT_NATIVE=0 turns the library off (callers then run their Numba kernels).
The wrappers take NumPy arrays of bits and plain parameters; codec and quant build those.
Loaded through ctypes, which releases the GIL; work is split over `threads()` OpenMP threads.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from contextlib import contextmanager
from functools import lru_cache

import numpy as np

from ..errors import UnknownNameError
from ..names import NamedEnum


class Isa(NamedEnum):
    __label__ = "ISA tier"
    SCALAR = "scalar"
    AVX2 = "avx2"
    AVX512 = "avx512"
    NEON = "neon"


_BIT = {Isa.SCALAR: 0, Isa.AVX2: 1, Isa.AVX512: 2, Isa.NEON: 3}
_ORDER = (Isa.SCALAR, Isa.AVX2, Isa.AVX512)  # x86-64, lowest first


class Enc(ctypes.Structure):
    """enc_t: one element format under one profile (codec/cpu_params.py fills it)."""

    _fields_ = [
        (n, ctypes.c_int32)
        for n in (
            "nrm_fexp",
            "nrm_off",
            "S",
            "half_n",
            "sub_base",
            "rne",
            "away",
            "maxq_pos",
            "maxq_neg",
            "ovf_pos",
            "ovf_neg",
            "inf_pos",
            "inf_neg",
            "nan_pos",
            "nan_neg",
            "twos",
            "zneg",
            "sign_bit",
        )
    ]


_i64, _i32, _f32, _ptr = ctypes.c_int64, ctypes.c_int32, ctypes.c_float, ctypes.c_void_p


class Fast(ctypes.Structure):
    """fast_t: the lean encoder of finite values (codec/native.py fills it)."""

    _fields_ = [
        ("rnd_off", ctypes.c_uint32),
        ("S", ctypes.c_uint32),
        ("magic", _f32),
        ("magic_bits", ctypes.c_uint32),
        ("min_normal", ctypes.c_uint32),
        ("maxq", ctypes.c_uint32),
        ("ovf", ctypes.c_uint32),
        ("sign_shift", ctypes.c_uint32),
    ]


class Pow2(ctypes.Structure):
    """pow2_t: the power-of-two path's view of a sign-bit float format (codec/native.py fills it)."""

    _fields_ = [
        ("M", _i32),
        ("bias", _i32),
        ("emin", _i32),
        ("maxq", ctypes.c_uint32),
        ("ovf", ctypes.c_uint32),
        ("sign_shift", ctypes.c_uint32),
        ("nthr", _i32),
        ("z", _i32),
        ("thr16", ctypes.c_uint32 * 7),
        ("thr32", ctypes.c_uint32 * 7),
    ]


class Quant(ctypes.Structure):
    """quant_t: one block quantization call."""

    _fields_ = [
        ("x", _ptr),
        ("bf16", _i32),
        ("mode", _i32),
        ("B", _i64),
        ("M", _i64),
        ("N", _i64),
        ("bm", _i64),
        ("bn", _i64),
        ("steps", _ptr),
        ("clamp", _f32),
        ("maxv", _f32),
        ("p", _f32),
        ("use_clamp", _i32),
        ("zero_unit", _i32),
        ("reciprocal", _i32),
        ("stored_kind", _i32),
        ("enc", Enc),
        ("fast", Fast),
        ("lean", _i32),
        ("pow2", Pow2),
        ("e4m3", Enc),
        ("codes", _ptr),
        ("sgrid", _ptr),
        ("stored", _ptr),
        ("stream", _i32),
        ("aff", _i32),
        ("aff_d", _i32),
        ("aff_t", _i32),
        ("aff_flo", _i32),
        ("aff_fhi", _i32),
        ("cells", _i32),
        ("cell_base", _i32),
        ("cell_tab", ctypes.c_int16 * 64),
        ("amax_given", _i32),
    ]


class Dequant(ctypes.Structure):
    _fields_ = [
        ("codes", _ptr),
        ("B", _i64),
        ("M", _i64),
        ("N", _i64),
        ("bm", _i64),
        ("bn", _i64),
        ("sgrid", _ptr),
        ("lut", _ptr),
        ("bf16", _i32),
        ("out", _ptr),
        ("arith", _i32),
        ("M_", _i32),
        ("bias", _i32),
        ("sign_shift", _i32),
        ("e_lo", _i32),
        ("e_hi", _i32),
        ("special_min", ctypes.c_uint32),
        ("subtab", ctypes.c_uint16 * 8),
        ("stream", _i32),
    ]


@lru_cache(maxsize=1)
def _lib():
    if os.environ.get("FP8PORT_NATIVE", "1") == "0":
        return None
    spec = importlib.util.find_spec(f"{__name__}._native")
    if spec is None or not spec.origin:
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
    except OSError:
        return None
    lib.fp8_cpu_tiers.restype = ctypes.c_int
    lib.fp8_encode.argtypes = [_ptr, _i32, _i64, ctypes.POINTER(Enc), _ptr, _ptr, _i32, _i32]
    lib.fp8_encode.restype = None
    lib.fp8_decode.argtypes = [_ptr, _i64, _ptr, _ptr, _i32, _i32]
    lib.fp8_decode.restype = None
    lib.fp8_amax.argtypes = [_ptr, _i32, _i64, _i32, _i32]
    lib.fp8_amax.restype = ctypes.c_uint32
    lib.fp8_nvfp4_amax.argtypes = [ctypes.POINTER(Quant), _i32, _i32]
    lib.fp8_nvfp4_amax.restype = ctypes.c_uint32
    lib.fp8_quant.argtypes = [ctypes.POINTER(Quant), _i32, _i32]
    lib.fp8_quant.restype = _i64
    lib.fp8_dequant.argtypes = [ctypes.POINTER(Dequant), _i32, _i32]
    lib.fp8_dequant.restype = None
    return lib


@lru_cache(maxsize=1)
def tiers() -> tuple[Isa, ...]:
    """Every tier this CPU and this build can run, lowest first (empty: no library)."""
    lib = _lib()
    if lib is None:
        return ()
    mask = lib.fp8_cpu_tiers()
    return tuple(t for t in (*_ORDER, Isa.NEON) if mask >> _BIT[t] & 1)


_UNSET = object()
_forced = _UNSET


@contextmanager
def forced(name):
    """Run the kernels on tier `name` (an Isa or its name) inside the block; None or "numba": none,
    so callers take their Numba kernels. For tests and benchmarks (process-wide, not thread-local)."""
    global _forced
    before = _forced
    _forced = None if name in (None, "numba") else Isa.parse(name)
    if _forced is not None and _forced not in tiers():
        _forced = before
        raise UnknownNameError("ISA tier for this CPU", name, [t.value for t in tiers()])
    try:
        yield
    finally:
        _forced = before


def tier() -> Isa | None:
    """The tier the kernels run on: the best one here, or FP8PORT_ISA's if lower; None: no kernels."""
    if _forced is not _UNSET:
        return _forced
    have = tiers()
    if not have:
        return None
    want = os.environ.get("FP8PORT_ISA")
    if not want:
        return have[-1]
    cap = Isa.parse(want)
    if cap not in have:
        raise UnknownNameError("ISA tier for this CPU (FP8PORT_ISA)", want, [t.value for t in have])
    return cap


def available() -> bool:
    return tier() is not None


_forked = False


def _after_fork_in_child():
    global _forked
    _forked = True


# GNU OpenMP cannot start threads in a child forked after its parent used them (the child hangs,
# as torch's own kernels do); a forked child runs these kernels on its one thread instead.
os.register_at_fork(after_in_child=_after_fork_in_child)


_cap: int | None = None


@contextmanager
def capped_threads(n: int):
    """At most `n` kernel threads inside the block (process-wide): a conversion leaves a core to its
    hashing thread."""
    global _cap
    before, _cap = _cap, max(1, n)
    try:
        yield
    finally:
        _cap = before


def threads() -> int:
    """The thread count Numba uses (numba.set_num_threads sets both; Numba's default, every CPU, where
    it is not loaded), at most `capped_threads`'s; 1 in a forked child."""
    if _forked:
        return 1
    if _cap is not None:
        return min(_cap, _uncapped())
    return _uncapped()


def _uncapped() -> int:
    if "numba" in sys.modules:
        return sys.modules["numba"].get_num_threads()
    return int(os.environ.get("NUMBA_NUM_THREADS") or os.cpu_count() or 1)


def _t(n_items: int) -> int:
    return max(1, min(threads(), n_items))


def _tier_id() -> int:
    return _BIT[tier()]


def encode(bits: np.ndarray, enc: Enc | None, lut: np.ndarray | None, out: np.ndarray) -> None:
    """Codes of float32 bits (uint32) or bf16 bits (uint16), flat and contiguous, into `out` (uint8):
    by the arithmetic encoder `enc`, or by `lut` (65,536 codes indexed by bf16 rounded to odd)."""
    n = bits.size
    _lib().fp8_encode(
        bits.ctypes.data,
        int(bits.dtype == np.uint16),
        n,
        ctypes.byref(enc or Enc()),
        None if lut is None else lut.ctypes.data,
        out.ctypes.data,
        _t(n >> 16),
        _tier_id(),
    )


def decode(codes: np.ndarray, lut32: np.ndarray, out: np.ndarray) -> None:
    """out (float32) = lut32[codes] for flat contiguous uint8 codes and a 256-entry table."""
    n = codes.size
    _lib().fp8_decode(codes.ctypes.data, n, lut32.ctypes.data, out.ctypes.data, _t(n >> 16), _tier_id())


def amax_bits(bits: np.ndarray) -> int:
    """max |x| of float32 (uint32) or bf16 (uint16) bits, as float32 bits (NaN > Inf > finite)."""
    n = bits.size
    return int(_lib().fp8_amax(bits.ctypes.data, int(bits.dtype == np.uint16), n, _t(n >> 16), _tier_id()))


def nvfp4_amax(q: Quant) -> int:
    """NVFP4's first pass over a filled Quant (bf16, 1 x 16 blocks, N a multiple of 128): the block amaxes
    into q.sgrid for the row pass, and the tensor amax as float32 bits; sets q.amax_given."""
    rows = q.B * q.M
    m = int(_lib().fp8_nvfp4_amax(ctypes.byref(q), _t(rows), _tier_id()))
    q.amax_given = 1
    return m


def quantize(q: Quant, groups: int) -> int:
    """Run one filled Quant over its row groups; the number of groups left to the general kernel."""
    return int(_lib().fp8_quant(ctypes.byref(q), _t(groups), _tier_id()))


def dequantize(d: Dequant, groups: int) -> None:
    _lib().fp8_dequant(ctypes.byref(d), _t(groups), _tier_id())
