"""Path selection for backend='fast': the C kernels (native.py) where they cover the scheme and the
input, else the Numba kernels (numba_kernels.py); None sends the caller to the reference.

Both are bit-exact with reference.py (tests/quant run every fast-path test on each of them, and on
every ISA tier of the C kernels this CPU can run).
"""

from __future__ import annotations

import numpy as np

from ..codec.native import lut256
from ..codec.policy import Overflow, Rounding
from ..codec.tables import encode_lut
from ..formats import Kind
from . import buffers, native, reference
from .rules import ScaleRule
from .scheme import Apply, BlockKind, ScaleStorage, Scheme, ZeroBlock
from .steps import step_table

_NO_STEPS = np.zeros(1, np.uint32)  # Numba's "no step table": the float rule


def numba_unsupported_reason(scheme: Scheme) -> str | None:
    """Why the Numba kernels cannot run this scheme (None: they can)."""
    rule = scheme.scale_rule
    if not reference.plain_codes(scheme):
        return f"scale rule {rule.value} changes codes after encoding (reference only)"
    if rule is not ScaleRule.V3_FLOAT and step_table(scheme) is None:
        return f"scale rule {rule.value} has no fast kernel (reference only)"
    if scheme.rules.rounding is Rounding.STOCHASTIC:
        return "stochastic rounding has no fast kernel"
    if scheme.element.kind is Kind.INT or scheme.element.mbits > 5:
        return f"element {scheme.element.name} has more than 6 significand bits (LUT encode needs <= 6)"
    if scheme.storage in (ScaleStorage.BFLOAT16, ScaleStorage.FLOAT16) and not rule.power_of_two:
        return f"{scheme.storage.value} storage of float scales rounds the scale (reference only)"
    return None


def unsupported_reason(scheme: Scheme) -> str | None:
    """Why no fast kernel can run this scheme (None: the C or the Numba kernels can)."""
    why_c = native.unsupported_reason(scheme)
    why_numba = numba_unsupported_reason(scheme)
    return None if why_c is None or why_numba is None else why_numba


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


def _grid_into(a: np.ndarray | None, shape, dtype) -> np.ndarray | None:
    """a as a C-contiguous array of `shape` and `dtype`'s item size to write into, or None where it is not one."""
    if a is None or not a.flags.c_contiguous or not a.flags.writeable or a.itemsize != np.dtype(dtype).itemsize:
        return None
    return a.view(dtype).reshape(shape) if a.size == int(np.prod(shape)) else None


def quantize(x: np.ndarray, scheme: Scheme, codes_out: np.ndarray | None = None, grids_out=None):
    """(codes like x, s_fp32 grid, stored grid or None, tensor scale or None, any non-finite), or None
    where only the reference can do it. x: float32 or bf16 bits (uint16). codes_out: a C-contiguous
    uint8 array of x's shape to write the codes into (else allocated). grids_out: (s_fp32, stored) arrays
    of an out= tensor that the scales are written into where their layout allows (the caller compares
    addresses before copying)."""
    shape = x.shape
    v3shape, bm, bn, moved = _layout(shape, scheme)
    if moved is not None:
        x = np.moveaxis(x, moved, -1)
    xs = np.ascontiguousarray(x)
    if xs.dtype == np.float32:
        xs = xs.view(np.uint32)
    x3 = xs.reshape(v3shape)
    B, M, N = v3shape
    gm, gn = -(-M // bm), -(-N // bn)
    if codes_out is not None and moved is None:
        codes = codes_out.reshape(v3shape)  # a view: codes_out is C-contiguous
    else:
        codes = buffers.empty(v3shape, np.uint8)
    s_out, st_out = grids_out if grids_out is not None and moved is None else (None, None)
    sgrid = _grid_into(s_out, (B, gm, gn), np.float32)
    sgrid = buffers.empty((B, gm, gn), np.float32) if sgrid is None else sgrid
    if native.unsupported_reason(scheme) is None:
        done = native.quantize(x3, scheme, bm, bn, codes, sgrid, _grid_into(st_out, (B, gm, gn), np.uint8))
        if done is not None:
            stored, tensor_scale = done
            return _finish(codes, sgrid, xs.shape, shape, scheme, moved, False, codes_out, stored, tensor_scale)
    if numba_unsupported_reason(scheme) is not None:
        return None
    from .numba_kernels import _quantize_bf16_pow2, _quantize_kernel  # Numba loads only when needed

    bad = np.zeros(B * gm, np.uint8)
    table = step_table(scheme)
    steps = _NO_STEPS if table is None else table
    lut = encode_lut(scheme.element, scheme.rules)
    if xs.dtype == np.uint16 and table is not None and N % bn == 0:
        _quantize_bf16_pow2(
            x3.reshape(B, M, gn, bn),
            bm,
            steps,
            lut,
            _e4m3_cap(scheme.element, scheme.rules),
            codes.reshape(B, M, gn, bn),
            sgrid,
            bad,
        )
        if not bad.any():
            return _finish(codes, sgrid, xs.shape, shape, scheme, moved, False, codes_out)
        bad[:] = 0  # some blocks need the general kernel: run it on everything (rare)
    mode = 0 if table is not None else (2 if scheme.apply is Apply.RECIPROCAL else 1)
    el = scheme.element
    clamp = np.float32(scheme.amax_clamp if scheme.amax_clamp is not None else 0.0)
    _quantize_kernel(
        x3,
        16 if xs.dtype == np.uint16 else 0,
        bm,
        bn,
        steps,
        np.float32(el.max),
        clamp,
        scheme.amax_clamp is not None,
        scheme.zero_block is ZeroBlock.UNIT,
        mode,
        lut,
        codes,
        sgrid,
        bad,
    )
    return _finish(codes, sgrid, xs.shape, shape, scheme, moved, bool(bad.any()), codes_out)


def _e4m3_cap(el, rules) -> int:
    """0x7E / 0x7F: E4M3 by integer code (saturating / overflow to NaN); -1: use the table."""
    ok = el.name == "float8_e4m3fn" and rules.rounding is Rounding.RNE and rules.nan_code == 0x7F
    if not ok or rules.overflow not in (Overflow.SATURATE, Overflow.NONFINITE):
        return -1
    return 0x7E if rules.overflow is Overflow.SATURATE else 0x7F


def _finish(codes, sgrid, xshape, shape, scheme, moved, bad, codes_out=None, stored=None, tensor_scale=None):
    codes = codes.reshape(xshape)
    if moved is not None:
        codes = np.moveaxis(codes, -1, moved)
        if codes_out is not None:
            np.copyto(codes_out, codes)
            codes = codes_out
    grid = np.ascontiguousarray(_grid_back(sgrid, shape, scheme, moved))
    if stored is not None:
        stored = np.ascontiguousarray(_grid_back(stored, shape, scheme, moved))
    return np.ascontiguousarray(codes), grid, stored, tensor_scale, bad


def dequantize(
    codes: np.ndarray, s_fp32: np.ndarray, scheme: Scheme, to_bf16: bool, out: np.ndarray | None = None
) -> np.ndarray:
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
    if native.cpu.available():
        native.dequantize(cs, bm, bn, sg3, scheme, to_bf16, out)
    else:
        from .numba_kernels import _dequantize_kernel

        _dequantize_kernel(cs, bm, bn, sg3, lut256(scheme.element), to_bf16, out)
    out = out.reshape(codes.shape)
    if moved is not None:
        out = np.moveaxis(out, -1, moved)
        if dst is None:
            out = np.ascontiguousarray(out)
        else:
            np.copyto(dst, out)
            out = dst
    return out if to_bf16 else out.view(np.float32)
