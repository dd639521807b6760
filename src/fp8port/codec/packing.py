"""`pack` / `unpack`: sub-byte codes to bytes and back, along the last axis.

* 4-bit formats: two codes per byte, in a named `PackOrder`: LOW_FIRST (element 2i in the low
  nibble: torchao `pack_uint4`, DeepGEMM, torch `float4_e2m1fn_x2`, compressed-tensors
  `weight_packed`, ModelOpt NVFP4 `weight`, gpt-oss `*_blocks`, DeepSeek-V4 I8 experts) or GGUF
  (ggml's block_mxfp4: within each 32 elements, element j low and j + 16 high).
* 6-bit formats: four codes in three bytes. OCP MX fixes no memory layout, so the
  layout is named (`Packing`): a little-endian bit stream, or torchao's CPU uint6 one.
* 8-bit formats: every code is already a byte; pack and unpack return a copy.

All bit work is vectorized NumPy on uint8 views; torch tensors go through NumPy on the
CPU and come back as uint8 tensors on their original device.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError, UnsupportedInputError
from ..formats import FormatSpec, get_format
from ..names import NamedEnum


class Packing(NamedEnum):
    """How four 6-bit codes u0..u3 share three bytes p0..p2."""

    __label__ = "FP6 layout"

    # One little-endian 24-bit word: u0 in bits 0-5, u1 in 6-11, u2 in 12-17, u3 in 18-23.
    BITSTREAM = "bitstream"
    # torchao's scalar CPU `pack_4_uint6_values` (torch_free_kernels/fallback/bitpacking/
    # uint6.h): u0..u2 in the low 6 bits of p0..p2, u3 split into three 2-bit pieces in
    # their top bits (bits 0-1 in p0, 2-3 in p1, 4-5 in p2). Its 32-value vector routines
    # spread a group's bytes across the block, so they are not this layout.
    TORCHAO = "torchao"


DEFAULT_LAYOUT = Packing.BITSTREAM


class PackOrder(NamedEnum):
    """Which two 4-bit codes share a byte (the low nibble is listed first)."""

    __label__ = "FP4 pack order"
    __aliases__ = {"low-first": ("torch", "compressed-tensors", "gpt-oss", "modelopt", "deepseek")}

    LOW_FIRST = "low-first"  # byte i = code[2i] | code[2i + 1] << 4
    GGUF = "gguf"  # per 32 codes: byte j = code[j] | code[j + 16] << 4 (ggml block_mxfp4 / block_nvfp4 qs)


GGUF_GROUP = 32  # codes per ggml MXFP4 block

# codes per group and bytes per group, by element width
_GROUP = {4: (2, 1), 6: (4, 3), 8: (1, 1)}


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "dtype") and hasattr(x, "device")


def _as_bytes(x, what: str) -> np.ndarray:
    """A uint8 NumPy array of x (uint8 arrays/tensors, or Python int sequences)."""
    if _is_torch(x):
        import torch

        # float4_e2m1fn_x2 is torch's container for packed FP4 bytes; read it as bytes.
        if x.dtype not in (torch.uint8, getattr(torch, "float4_e2m1fn_x2", torch.uint8)):
            raise UnsupportedInputError(f"{what}: torch dtype {x.dtype} is not supported; use torch.uint8")
        return x.detach().cpu().view(torch.uint8).numpy()
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8:
            raise UnsupportedInputError(f"{what}: dtype {x.dtype} is not supported; use uint8")
        return x
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise UnsupportedInputError(f"{what}: expected integer codes, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > 0xFF):
        bad = (arr < 0) | (arr > 0xFF)
        raise UnsupportedInputError(f"{what}: {_first(arr, bad)} does not fit in a byte")
    return arr.astype(np.uint8)


def _first(arr: np.ndarray, bad: np.ndarray) -> str:
    """'value 0x.. at index (...)' of the first True in bad."""
    i = np.unravel_index(int(np.argmax(bad)), arr.shape)
    return f"value 0x{int(arr[i]):02x} at index {tuple(int(j) for j in i)}"


def _like(out: np.ndarray, x):
    if not _is_torch(x):
        return out
    import torch

    return torch.from_numpy(out).to(x.device)


def _order_for(spec: FormatSpec, order) -> PackOrder:
    if order is None:
        return PackOrder.LOW_FIRST
    parsed = PackOrder.parse(order)
    if spec.bits != 4 and parsed is not PackOrder.LOW_FIRST:
        raise UnsupportedInputError(f"pack order {parsed.value!r} applies to 4-bit formats only, not {spec.name}")
    return parsed


def _layout_for(spec: FormatSpec, layout) -> Packing | None:
    if spec.bits == 6:
        return DEFAULT_LAYOUT if layout is None else Packing.parse(layout)
    if layout is not None:
        parsed = Packing.parse(layout)  # a misspelt name still fails as a name first
        raise UnsupportedInputError(
            f"layout {parsed.value!r} applies to 6-bit formats only; {spec.name} has one fixed layout"
        )
    return None


def _groups(arr: np.ndarray, per_group: int, what: str, spec: FormatSpec) -> np.ndarray:
    """arr reshaped to (..., n // per_group, per_group), or a ShapeError."""
    if arr.ndim == 0:
        raise ShapeError(f"{what}: a 0-d array has no last axis to pack along")
    n = arr.shape[-1]
    if n % per_group:
        raise ShapeError(
            f"{what}: {spec.name} needs the last dimension to be a multiple of {per_group}, got {n} "
            f"(shape {tuple(arr.shape)})"
        )
    return arr.reshape(*arr.shape[:-1], n // per_group, per_group)


def pack(codes, fmt, *, layout=None, order=None):
    """Pack one-code-per-byte `codes` of `fmt` along the last axis (see the module doc).

    FP4: last dimension even (a multiple of 32 for order "gguf"), result half as long; order
    "low-first" (default) or "gguf". FP6: last dimension a multiple of 4, result 3/4 as long;
    layout "bitstream" (default) or "torchao". 8-bit: a copy.
    """
    spec = get_format(fmt)
    lay = _layout_for(spec, layout)
    order = _order_for(spec, order)
    arr = _as_bytes(codes, "codes")
    if spec.bits < 8 and arr.size and int(arr.max()) >= spec.ncodes:
        raise UnsupportedInputError(
            f"codes: {spec.name} has {spec.ncodes} codes, found {_first(arr, arr >= spec.ncodes)}"
        )
    if order is PackOrder.GGUF:
        g = _groups(arr, GGUF_GROUP, "codes", spec)
        half = GGUF_GROUP // 2
        return _like(np.ascontiguousarray((g[..., :half] | (g[..., half:] << 4)).reshape(*arr.shape[:-1], -1)), codes)
    per_code, _ = _GROUP[spec.bits]
    g = _groups(arr, per_code, "codes", spec)
    if spec.bits == 8:
        out = g[..., 0].copy()
    elif spec.bits == 4:
        out = g[..., 0] | (g[..., 1] << 4)
    else:
        out = _pack6(g, lay).reshape(*arr.shape[:-1], -1)
    return _like(np.ascontiguousarray(out), codes)


def unpack(packed, fmt, *, layout=None, order=None):
    """Inverse of `pack`: one code per byte (uint8), along the last axis."""
    spec = get_format(fmt)
    lay = _layout_for(spec, layout)
    order = _order_for(spec, order)
    arr = _as_bytes(packed, "packed")
    if order is PackOrder.GGUF:
        g = _groups(arr, GGUF_GROUP // 2, "packed", spec)
        return _like(
            np.ascontiguousarray(np.concatenate([g & 0x0F, g >> 4], axis=-1).reshape(*arr.shape[:-1], -1)), packed
        )
    _, per_bytes = _GROUP[spec.bits]
    g = _groups(arr, per_bytes, "packed", spec)
    if spec.bits == 8:
        out = g[..., 0].copy()
    elif spec.bits == 4:
        out = np.stack([g[..., 0] & 0x0F, g[..., 0] >> 4], axis=-1).reshape(*arr.shape[:-1], -1)
    else:
        out = _unpack6(g, lay).reshape(*arr.shape[:-1], -1)
    return _like(np.ascontiguousarray(out), packed)


def _pack6(g: np.ndarray, layout: Packing) -> np.ndarray:
    """(..., 4) codes -> (..., 3) bytes. uint8 shifts drop the bits that leave the byte."""
    u0, u1, u2, u3 = g[..., 0], g[..., 1], g[..., 2], g[..., 3]
    if layout is Packing.BITSTREAM:
        p = (u0 | (u1 << 6), (u1 >> 2) | (u2 << 4), (u2 >> 4) | (u3 << 2))
    else:
        p = (u0 | ((u3 & 0x03) << 6), u1 | ((u3 & 0x0C) << 4), u2 | ((u3 & 0x30) << 2))
    return np.stack(p, axis=-1)


def _unpack6(g: np.ndarray, layout: Packing) -> np.ndarray:
    """(..., 3) bytes -> (..., 4) codes."""
    p0, p1, p2 = g[..., 0], g[..., 1], g[..., 2]
    if layout is Packing.BITSTREAM:
        u = (p0 & 0x3F, (p0 >> 6) | ((p1 & 0x0F) << 2), (p1 >> 4) | ((p2 & 0x03) << 4), p2 >> 2)
    else:
        u = (p0 & 0x3F, p1 & 0x3F, p2 & 0x3F, (p0 >> 6) | ((p1 >> 6) << 2) | ((p2 >> 6) << 4))
    return np.stack(u, axis=-1)


def gguf_mxfp4_blocks(codes, scale_bytes) -> np.ndarray:
    """ggml MXFP4 blocks (uint8 [..., K/32, 17]: the E8M0 byte, then 16 bytes in GGUF order) from
    E2M1 codes [..., K] (one per byte) and E8M0 scale bytes [..., K/32]."""
    e = _as_bytes(scale_bytes, "scale_bytes")
    qs = np.asarray(pack(codes, "float4_e2m1fn", order=PackOrder.GGUF))
    qs = qs.reshape(*qs.shape[:-1], -1, GGUF_GROUP // 2)
    if e.shape != qs.shape[:-1]:
        raise ShapeError(f"scale_bytes: shape {e.shape} does not match the {qs.shape[:-1]} blocks of the codes")
    return np.concatenate([e[..., None], qs], axis=-1)


def from_gguf_mxfp4_blocks(blocks) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `gguf_mxfp4_blocks`: (E2M1 codes [..., K], E8M0 scale bytes [..., K/32]).
    ggml decodes scale byte 0xFF as 2^128 where OCP reads NaN; the byte is passed through as is."""
    b = _as_bytes(blocks, "blocks")
    if b.ndim == 0 or b.shape[-1] != 1 + GGUF_GROUP // 2:
        raise ShapeError(f"blocks: ggml MXFP4 blocks are {1 + GGUF_GROUP // 2} bytes, got shape {b.shape}")
    codes = unpack(np.ascontiguousarray(b[..., 1:]).reshape(*b.shape[:-2], -1), "float4_e2m1fn", order=PackOrder.GGUF)
    return codes, np.ascontiguousarray(b[..., 0])
