"""AscendV1 weights to and from values: int8 per channel (bf16-exact scales), MX codes with E8M0 bytes."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

from ....codec.packing import pack, unpack
from ....errors import CheckpointError, NonFiniteError
from ....quant import QuantizedTensor, Role, dequantize, quantize
from ....quant import storage as scale_store
from ....quant.tensor import Framework
from ...folder import Checkpoint
from ..base import NonFinitePolicy, StoredWeight
from .types import MX_GROUP, AscendType, logical

INT8_UNIT = 64  # the int8 element's value is code / 64: a stored scale s is the multiplier 64 * s


def bf16_ceil(s: np.ndarray) -> np.ndarray:
    """The smallest bf16 value >= s: the loaders hold weight_scale in bf16 (§2.2), and rounding
    up keeps |w / s| <= 127, so no channel clips."""
    b = np.asarray(s, np.float32).astype(ml_dtypes.bfloat16)
    low = b.astype(np.float32) < s
    b = np.where(low, np.nextafter(b, np.array(np.inf, ml_dtypes.bfloat16)), b)
    return b.astype(np.float32)


def int8_per_channel(w: np.ndarray, bf16_scale: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output row: scale amax/127 (floored at fp32 eps, as msModelSlim does),
    codes rounded half to even."""
    amax = np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    s = np.maximum(amax / np.float32(127), np.finfo(np.float32).eps).astype(np.float32)
    if bf16_scale:
        s = bf16_ceil(s)
    q = np.clip(np.rint(w / s[:, None]), -128, 127).astype(np.int8)
    return q, s


def int8_tensor(q: np.ndarray, s: np.ndarray, t: AscendType) -> QuantizedTensor:
    """int8 codes with one float32 scale per row as a QuantizedTensor (the int8 element is code / 64)."""
    s = np.asarray(s, np.float32).reshape(-1, 1)
    return QuantizedTensor(codes=np.ascontiguousarray(q).view(np.uint8), scale=s, scale_fp32=s * np.float32(INT8_UNIT),
                           shape=tuple(q.shape), scheme=t.scheme, role=Role.WEIGHT, src_dtype="float32",
                           framework=Framework.NUMPY)


def mx_tensor(codes: np.ndarray, scale_bytes: np.ndarray, shape, t: AscendType) -> QuantizedTensor:
    return QuantizedTensor(codes=codes, scale=scale_bytes.view(ml_dtypes.float8_e8m0fnu),
                           scale_fp32=scale_store.e8m0_values(scale_bytes), shape=tuple(shape), scheme=t.scheme,
                           role=Role.WEIGHT, src_dtype="float32", framework=Framework.NUMPY)


def check_e8m0(scale_bytes: np.ndarray, where: str) -> None:
    if (scale_bytes == 0xFF).any():
        raise NonFiniteError(f"{where}: a block has a NaN scale (E8M0 0xFF), which Ascend loaders refuse "
                             "(§2.6); fix the non-finite weights (--nonfinite zero)")


def encode(t: AscendType, w: np.ndarray, name: str, policy: NonFinitePolicy) -> QuantizedTensor:
    """float32 weight w in type t (codes and scales as the loaders read them)."""
    if not np.isfinite(w).all():
        if policy is NonFinitePolicy.ERROR:
            raise NonFiniteError(f"{name}: has NaN/Inf values (use --nonfinite zero)")
        if not t.mx:
            raise NonFiniteError(f"{name}: NaN/Inf cannot be stored in int8 {t.value} (use --nonfinite zero)")
    if t.mx:
        q = quantize(w, t.scheme, role="weight", nonfinite="propagate")
        check_e8m0(np.asarray(q.scale).view(np.uint8), name)
        return q
    q, s = int8_per_channel(w, bf16_scale=t is not AscendType.W8A8)
    return int8_tensor(q, s, t)


def arrays(t: AscendType, q: QuantizedTensor, activation=None, deq_int64: bool = False) -> list[np.ndarray]:
    """The arrays of `entries(t, ...)` for a QuantizedTensor in t's scheme."""
    n, k = q.shape
    if t.mx:
        codes = np.asarray(q.codes, np.uint8)
        if t.fp4:  # low nibble first along K; K is even, so flat packing = per row
            codes = pack(codes.reshape(-1), q.scheme.element).reshape(n, k // 2)
        sb = np.asarray(q.scale).view(np.uint8)
        check_e8m0(sb, q.scheme.name)
        return [codes, sb]
    codes = np.asarray(q.codes).view(np.int8)
    s = np.asarray(q.scale, np.float32).reshape(n)
    if t is not AscendType.W8A8:
        return [codes, s[:, None], np.zeros((n, 1), np.float32)]
    in_s, in_o = activation
    deq_scale = (np.float32(in_s) * s).astype(np.float32)
    qb = np.rint(-np.float64(in_o) * codes.astype(np.int64).sum(axis=1)).astype(np.int32)
    if deq_int64:  # fp32 bits sign-extended into int64 (§2.1 deqscale2int64)
        deq_scale = deq_scale.view(np.int32).astype(np.int64)
    return [codes, np.array([in_s], np.float32), np.array([in_o], np.float32), deq_scale, qb]


def _need(ckpt: Checkpoint, name: str, dtypes: tuple[str, ...], shape) -> None:
    """A companion tensor exists with one of `dtypes` and `shape` (headers only)."""
    if name not in ckpt.tensors:
        raise CheckpointError(f"{ckpt.root}: tensor {name!r} is missing")
    info = ckpt.info(name)
    if info.dtype not in dtypes or tuple(info.shape) != tuple(shape):
        raise CheckpointError(f"{ckpt.tensors[name][0]}: {name!r} is {info.dtype}{list(info.shape)}, expected "
                              f"{'/'.join(dtypes)}{list(shape)}")


def parts(ckpt: Checkpoint, name: str, t: AscendType) -> dict[str, str]:
    """The tensors of weight `name` in type t, their dtypes and shapes checked from the headers."""
    base = name[: -len(".weight")]
    n, k = logical(ckpt.info(name).shape, t)
    out = {"codes": name}
    if t.mx:
        _need(ckpt, name, ("U8", "I8") if t.fp4 else ("F8_E4M3", "U8"), ckpt.info(name).shape)
        _need(ckpt, base + ".weight_scale", ("U8", "F8_E8M0"), (n, math.ceil(k / MX_GROUP)))
        out["scale"] = base + ".weight_scale"
    elif t is AscendType.W8A8:
        _need(ckpt, name, ("I8",), (n, k))
        _need(ckpt, base + ".deq_scale", ("F32", "I64"), (n,))
        _need(ckpt, base + ".input_scale", ("F32", "BF16", "F16"), (1,))
        out.update(scale=base + ".deq_scale", input_scale=base + ".input_scale")
    elif t.per_channel:
        _need(ckpt, name, ("I8",), (n, k))
        _need(ckpt, base + ".weight_scale", ("F32", "BF16", "F16"), (n, 1))
        out["scale"] = base + ".weight_scale"
    else:
        raise CheckpointError(f"{ckpt.tensors[name][0]}: {name!r} is {t.value}, which fp8port does not read")
    for c in ("weight_offset", "input_offset", "quant_bias", "weight_dual_scale"):
        if f"{base}.{c}" in ckpt.tensors:
            out[c] = f"{base}.{c}"
    return out


def _int8_scale(ckpt: Checkpoint, w: StoredWeight, t: AscendType) -> np.ndarray:
    """The per-row float32 multiplier of an int8 weight (W8A8 static: deq_scale / input_scale)."""
    if t is AscendType.W8A8:
        deq = ckpt.read(w.parts["scale"])
        if deq.dtype == np.int64:  # low 32 bits hold the fp32 pattern
            deq = deq.astype(np.int32).view(np.float32)
        in_s = ckpt.read(w.parts["input_scale"]).astype(np.float32)
        return deq.astype(np.float32) / in_s[0]
    return ckpt.read(w.parts["scale"]).astype(np.float32).reshape(-1)


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
    if "weight_offset" in w.parts and ckpt.read(w.parts["weight_offset"]).any():
        raise CheckpointError(f"{ckpt.tensors[w.name][0]}: {w.name!r} has a non-zero weight_offset (asymmetric "
                              "int8), which a block-scaled tensor cannot hold; `fp8port dequant` reads it")
    return int8_tensor(ckpt.read(w.name), _int8_scale(ckpt, w, t), t)


def values(ckpt: Checkpoint, w: StoredWeight) -> np.ndarray:
    """One quantized AscendV1 weight as float32 values (what the loaders compute)."""
    t = AscendType.parse(w.label)
    if t.mx:
        return np.asarray(dequantize(read(ckpt, w), "float32"), np.float32)
    q = ckpt.read(w.name).astype(np.float32)
    s = _int8_scale(ckpt, w, t)[:, None]
    off = ckpt.read(w.parts["weight_offset"]).astype(np.float32) if "weight_offset" in w.parts and t.per_channel else 0
    return (q - off) * s if t.per_channel else q * s
