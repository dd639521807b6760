"""Block quantize / dequantize on the C kernels (fp8port.cpu): a scheme becomes one cpu.Quant.

Covered: bf16 or float32 input; any element the codec encodes by arithmetic (E4M3, E5M2, FP6,
FP4, E1M2, INT8, fnuz; RNE / away / toward zero); scales from a power-of-two rule's step form
(steps.py), the float rule v3_float, or NVFP4's two levels. Blocks with a non-finite amax or scale
are left to the general kernel (the call returns None). Bit-exact with reference.py.
"""

from __future__ import annotations

import numpy as np

from .. import cpu
from ..codec import native as codec_native
from ..codec.profiles import resolve
from . import reference
from .rules import ScaleRule
from .scheme import Apply, ScaleStorage, Scheme, ZeroBlock
from .steps import affine, step_table

_STORED = {ScaleStorage.E8M0: 1, ScaleStorage.E4M3_TENSOR: 2}
STREAM_BYTES = 8 << 20  # codes (dequantize: outputs) this large are written around the cache (non-temporal stores)


_AFFINE: dict[int, tuple] = {}  # id(step table) -> (the table, kept alive; its affine form)


def _affine(table: np.ndarray):
    """steps.affine, once per step table (step_table hands out one read-only array per scheme)."""
    hit = _AFFINE.get(id(table))
    if hit is None or hit[0] is not table:
        hit = _AFFINE[id(table)] = (table, affine(table))
    return hit[1]


def unsupported_reason(scheme: Scheme) -> str | None:
    """Why the C kernels cannot quantize this scheme (None: they can, where built)."""
    if not cpu.available():
        return "the C kernels are not built here (or FP8PORT_NATIVE=0)"
    if not reference.plain_codes(scheme):
        return f"scale rule {scheme.scale_rule.value} changes codes after encoding (reference only)"
    if codec_native.encoder(scheme.element, scheme.rules) is None:
        return f"element {scheme.element.name} under these rules has no arithmetic encoder"
    rule = scheme.scale_rule
    if rule is ScaleRule.NVFP4 or (rule is ScaleRule.V3_FLOAT and scheme.storage is ScaleStorage.FLOAT32):
        return None
    if step_table(scheme) is None:
        return f"scale rule {rule.value} has no step form"
    return None


def quantize(x3: np.ndarray, scheme: Scheme, bm: int, bn: int, codes: np.ndarray, sgrid: np.ndarray, stored_out=None):
    """x3 (B, M, N): bf16 bits (uint16) or float32 bits (uint32). Fills codes and sgrid; returns
    (stored grid or None where the caller stores s itself, tensor scale or None), or None where a
    block needs the general kernel (outputs then partly written). stored_out: a uint8 array of
    sgrid's shape for the stored E8M0 bytes (else allocated)."""
    B, M, N = x3.shape
    rule = scheme.scale_rule
    el = scheme.element
    q = cpu.Quant(
        x=x3.ctypes.data,
        bf16=int(x3.dtype == np.uint16),
        B=B,
        M=M,
        N=N,
        bm=bm,
        bn=bn,
        enc=codec_native.encoder(el, scheme.rules),
        codes=codes.ctypes.data,
        sgrid=sgrid.ctypes.data,
        maxv=np.float32(el.max),
        reciprocal=scheme.apply is Apply.RECIPROCAL,
        zero_unit=scheme.zero_block is ZeroBlock.UNIT,
        stored_kind=_STORED.get(scheme.storage, 0),
        stream=codes.nbytes >= STREAM_BYTES,
    )
    lean = codec_native.lean_encoder(el, scheme.rules)
    if lean is not None:
        (q.fast, q.pow2), q.lean = lean, 1
    p = None
    if rule is ScaleRule.NVFP4:
        # bf16 rows of whole 128-element steps: the first pass keeps the block amaxes for the row pass
        given = q.bf16 and bm == 1 and bn == 16 and N % 128 == 0
        tmax = cpu.nvfp4_amax(q) if given else cpu.amax_bits(x3)
        if tmax >= 0x7F800000:
            return None
        e4m3, r4 = resolve("float8_e4m3fn")
        p = np.float32(np.uint32(tmax).view(np.float32) / np.float32(e4m3.max * el.max))
        p = np.float32(1) if p == 0 else p
        q.mode, q.p, q.e4m3 = 2, p, codec_native.encoder(e4m3, r4)
        cells = codec_native.cells(el, scheme.rules) if q.bf16 else None
        if cells is not None:
            q.cells, (q.cell_base, q.cell_tab[:]) = 1, (cells[0], cells[1].tolist())
    elif rule is ScaleRule.V3_FLOAT:
        q.mode, q.use_clamp = 1, scheme.amax_clamp is not None
        q.clamp = np.float32(scheme.amax_clamp or 0.0)
    else:
        table = step_table(scheme)
        q.steps = table.ctypes.data
        aff = _affine(table)
        if aff is not None:
            q.aff, (q.aff_d, q.aff_t, q.aff_flo, q.aff_fhi) = 1, aff
    stored = None
    if q.stored_kind:
        stored = stored_out if q.stored_kind == 1 and stored_out is not None else np.empty(sgrid.shape, np.uint8)
    if stored is not None:
        q.stored = stored.ctypes.data
    if cpu.quantize(q, B * -(-M // bm)):
        return None
    return stored, p


def dequantize(
    codes3: np.ndarray, bm: int, bn: int, sgrid: np.ndarray, scheme: Scheme, to_bf16: bool, out: np.ndarray
) -> None:
    """codes3 (B, M, N) uint8 times the float32 grid into out (B, M, N): bf16 bits or float32."""
    B, M, N = codes3.shape
    lut = codec_native.lut256(scheme.element)
    d = cpu.Dequant(
        codes=codes3.ctypes.data,
        B=B,
        M=M,
        N=N,
        bm=bm,
        bn=bn,
        sgrid=sgrid.ctypes.data,
        lut=lut.ctypes.data,
        bf16=int(to_bf16),
        out=out.ctypes.data,
        stream=out.nbytes >= STREAM_BYTES,
    )
    arith = codec_native.pow2_decoder(scheme.element)
    if arith is not None:
        for k, v in arith.items():
            setattr(d, k, (type(d.subtab))(*v) if k == "subtab" else v)
    cpu.dequantize(d, B * -(-M // bm))
