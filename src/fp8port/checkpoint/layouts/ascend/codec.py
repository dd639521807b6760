"""AscendV1 weights to and from values: per-channel int8 / int4 / E4M3 codes with float32 scales, MX codes
with E8M0 bytes, packed as msModelSlim's AscendV1Saver packs them."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

from ....codec.packing import pack, unpack
from ....errors import CheckpointError, NonFiniteError
from ....formats import Kind
from ....quant import QuantizedTensor, Role, Scheme, dequantize, quantize
from ....quant import storage as scale_store
from ....quant.tensor import Framework
from ...folder import Checkpoint
from ..base import NonFinitePolicy, StoredWeight
from .types import COMPANIONS, MX_GROUP, AscendType, logical, scale_bias_slices


def step(scheme: Scheme) -> np.float32:
    """The stored weight_scale per unit of fp8port's scale: INT elements count in 2^-mbits (int8: 1/64)."""
    return np.float32(scheme.element.min_subnormal if scheme.element.kind is Kind.INT else 1.0)


def row_tensor(codes: np.ndarray, weight_scale: np.ndarray, t: AscendType) -> QuantizedTensor:
    """Per-row codes (uint8 bytes; int codes two's complement) with msModelSlim's weight_scale [N, 1]."""
    scheme = t.scheme
    s = (np.asarray(weight_scale, np.float32).reshape(-1, 1) / step(scheme)).astype(np.float32)
    return QuantizedTensor(
        codes=np.ascontiguousarray(codes).view(np.uint8),
        scale=s,
        scale_fp32=s,
        shape=tuple(codes.shape),
        scheme=scheme,
        role=Role.WEIGHT,
        src_dtype="float32",
        framework=Framework.NUMPY,
    )


def mx_tensor(codes: np.ndarray, scale_bytes: np.ndarray, shape, t: AscendType) -> QuantizedTensor:
    return QuantizedTensor(
        codes=codes,
        scale=scale_bytes.view(ml_dtypes.float8_e8m0fnu),
        scale_fp32=scale_store.e8m0_values(scale_bytes),
        shape=tuple(shape),
        scheme=t.scheme,
        role=Role.WEIGHT,
        src_dtype="float32",
        framework=Framework.NUMPY,
    )


def check_e8m0(scale_bytes: np.ndarray, where: str) -> None:
    if (scale_bytes == 0xFF).any():
        raise NonFiniteError(
            f"{where}: a block has a NaN scale (E8M0 0xFF), which Ascend loaders refuse "
            "(§2.6); fix the non-finite weights (--nonfinite zero)"
        )


def encode(t: AscendType, w: np.ndarray, scheme: Scheme, name: str, policy: NonFinitePolicy) -> QuantizedTensor:
    """float32 weight w quantized with `scheme` for type t (codes and scales as the loaders read them)."""
    if not np.isfinite(w).all():
        if policy is NonFinitePolicy.ERROR:
            raise NonFiniteError(f"{name}: has NaN/Inf values (use --nonfinite zero)")
        if not t.mx:
            raise NonFiniteError(f"{name}: NaN/Inf cannot be stored in {t.value} (use --nonfinite zero)")
    q = quantize(w, scheme, role="weight", nonfinite="propagate")
    if t.mx:
        check_e8m0(np.asarray(q.scale).view(np.uint8), name)
    return q


def pack_row_pairs(codes: np.ndarray) -> np.ndarray:
    """int4 codes [N, K] as msModelSlim's `w4a8_pack_int4`: int8 [N/2, K], row 2i low nibble, 2i+1 high."""
    return pack(np.ascontiguousarray(codes.T), "int4").T.view(np.int8)


def unpack_row_pairs(b: np.ndarray) -> np.ndarray:
    b = np.ascontiguousarray(b).view(np.uint8)
    return np.ascontiguousarray(unpack(np.ascontiguousarray(b.T), "int4").T)


def scale_bias(name: str, codes: np.ndarray, weight_scale: np.ndarray) -> np.ndarray:
    """W4A8_DYNAMIC's scale_bias: 8 * sum_k q * s over whole rows or 16 slices of K (float32). Each product is
    exact; the sums are taken in float64 (msModelSlim: float32, exact while 8 * K < 2^16 for a bf16 scale)."""
    q = codes.astype(np.int8) << 4 >> 4  # two's complement nibbles as integers
    deq = q.astype(np.float64) * weight_scale.astype(np.float64).reshape(-1, 1)
    return (8 * deq.reshape(deq.shape[0], scale_bias_slices(name), -1).sum(-1)).astype(np.float32)


def arrays(t: AscendType, name: str, q: QuantizedTensor, activation=None, deq_int64: bool = False) -> list[np.ndarray]:
    """The arrays of `entries(t, name, ...)` for a QuantizedTensor in a scheme type t stores."""
    n, k = q.shape
    codes = np.asarray(q.codes, np.uint8)
    if t.mx:
        if t.fp4:  # low nibble first along K; K is even, so flat packing = per row
            codes = pack(codes.reshape(-1), q.scheme.element).reshape(n, k // 2)
        sb = np.asarray(q.scale).view(np.uint8)
        check_e8m0(sb, q.scheme.name)
        return [codes, sb]
    ws = (np.asarray(q.scale_fp32, np.float32).reshape(n, 1) * step(q.scheme)).astype(np.float32)
    zeros = np.zeros((n, 1), np.float32)
    if t is AscendType.W4A8_DYNAMIC:
        return [pack_row_pairs(codes), ws, zeros, scale_bias(name, codes, ws)]
    if t is not AscendType.W8A8:
        return [codes.view(np.int8), ws, zeros]
    in_s, in_o = activation
    deq_scale = (np.float32(in_s) * ws.reshape(n)).astype(np.float32)
    qb = np.rint(-np.float64(in_o) * codes.view(np.int8).astype(np.int64).sum(axis=1)).astype(np.int32)
    if deq_int64:  # fp32 bits sign-extended into int64 (§2.1 deqscale2int64)
        deq_scale = deq_scale.view(np.int32).astype(np.int64)
    return [codes.view(np.int8), qb, np.array([in_s], np.float32), np.array([in_o], np.float32), deq_scale]


def _need(ckpt: Checkpoint, name: str, dtypes: tuple[str, ...], shape) -> None:
    """A companion tensor exists with one of `dtypes` and `shape` (headers only)."""
    if name not in ckpt.tensors:
        raise CheckpointError(f"{ckpt.root}: tensor {name!r} is missing")
    info = ckpt.info(name)
    if info.dtype not in dtypes or tuple(info.shape) != tuple(shape):
        raise CheckpointError(
            f"{ckpt.tensors[name][0]}: {name!r} is {info.dtype}{list(info.shape)}, expected "
            f"{'/'.join(dtypes)}{list(shape)}"
        )


ROW_CODES = {AscendType.W4A8_DYNAMIC: ("I8", "U8"), AscendType.WFP8AFP8_DYNAMIC: ("F8_E4M3", "U8")}
FLOAT_SCALES = ("F32", "BF16", "F16")


def parts(ckpt: Checkpoint, name: str, t: AscendType) -> dict[str, str]:
    """The tensors of weight `name` in type t, their dtypes and shapes checked from the headers."""
    base = name[: -len(".weight")]
    stored = ckpt.info(name).shape
    n, k = logical(stored, t)
    out = {"codes": name}
    if t.mx:
        _need(ckpt, name, ("U8", "I8") if t.fp4 else ("F8_E4M3", "U8"), stored)
        _need(ckpt, base + ".weight_scale", ("U8", "F8_E8M0"), (n, math.ceil(k / MX_GROUP)))
        out["scale"] = base + ".weight_scale"
    elif t is AscendType.W8A8:
        _need(ckpt, name, ("I8",), (n, k))
        _need(ckpt, base + ".deq_scale", ("F32", "I64"), (n,))
        _need(ckpt, base + ".input_scale", FLOAT_SCALES, (1,))
        out.update(scale=base + ".deq_scale", input_scale=base + ".input_scale")
    elif t.per_channel:
        _need(ckpt, name, ROW_CODES.get(t, ("I8",)), stored)
        _need(ckpt, base + ".weight_scale", FLOAT_SCALES, (n, 1))
        out["scale"] = base + ".weight_scale"
    else:
        raise CheckpointError(f"{ckpt.tensors[name][0]}: {name!r} is {t.value}, which fp8port does not read")
    out.update((c, f"{base}.{c}") for c in COMPANIONS if f"{base}.{c}" in ckpt.tensors and c not in out.values())
    return out


def _row_scale(ckpt: Checkpoint, w: StoredWeight, t: AscendType) -> np.ndarray:
    """The per-row float32 weight_scale (W8A8 static: deq_scale / input_scale)."""
    if t is AscendType.W8A8:
        deq = ckpt.read(w.parts["scale"])
        if deq.dtype == np.int64:  # low 32 bits hold the fp32 pattern
            deq = deq.astype(np.int32).view(np.float32)
        in_s = ckpt.read(w.parts["input_scale"]).astype(np.float32)
        return deq.astype(np.float32) / in_s[0]
    return ckpt.read(w.parts["scale"]).astype(np.float32).reshape(-1)


def _row_codes(ckpt: Checkpoint, w: StoredWeight, t: AscendType) -> np.ndarray:
    raw = ckpt.read(w.name)
    return unpack_row_pairs(raw) if t is AscendType.W4A8_DYNAMIC else raw.view(np.uint8)


def _offset(ckpt: Checkpoint, w: StoredWeight) -> np.ndarray | None:
    return ckpt.read(w.parts["weight_offset"]).astype(np.float32) if "weight_offset" in w.parts else None


def read(ckpt: Checkpoint, w: StoredWeight) -> QuantizedTensor:
    t = AscendType.parse(w.label)
    n, k = w.shape
    if t.mx:
        codes = ckpt.read(w.name).view(np.uint8)
        if t.fp4:
            codes = unpack(codes.reshape(-1), t.scheme.element).reshape(n, k)
        sb = ckpt.read(w.parts["scale"]).view(np.uint8)
        check_e8m0(sb, f"{ckpt.tensors[w.name][0]}: {w.parts['scale']}")
        return mx_tensor(codes, sb, (n, k), t)
    off = _offset(ckpt, w)
    if off is not None and off.any():
        raise CheckpointError(
            f"{ckpt.tensors[w.name][0]}: {w.name!r} has a non-zero weight_offset (asymmetric "
            "int), which a block-scaled tensor cannot hold; `fp8port dequant` reads it"
        )
    return row_tensor(_row_codes(ckpt, w, t), _row_scale(ckpt, w, t), t)


def values(ckpt: Checkpoint, w: StoredWeight) -> np.ndarray:
    """One quantized AscendV1 weight as float32 values (what the loaders and msModelSlim compute)."""
    t = AscendType.parse(w.label)
    if t.mx or t is AscendType.WFP8AFP8_DYNAMIC:
        return np.asarray(dequantize(read(ckpt, w), "float32"), np.float32)
    codes = _row_codes(ckpt, w, t)
    bits = t.scheme.element.bits
    q = (codes.astype(np.int8) << (8 - bits) >> (8 - bits)).astype(np.float32)  # two's complement integers
    off = _offset(ckpt, w)
    return (q - (0 if off is None else off)) * _row_scale(ckpt, w, t)[:, None]
