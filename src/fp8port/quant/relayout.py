"""Exact re-layout: a QuantizedTensor's codes under other blocks or another scale storage.

Codes are kept; each target block takes the scale of the one source block that contains it
(replicated where the target blocks are finer), stored in the target's scale storage. Exact when
every target block nests inside a source block and every scale fits the target storage; anything
else raises RelayoutError. One step keeps the codes without being exact in general: NVFP4's tensor
scale moving between a divisor and a multiplier (`rounding`).
Every layout writer shares this: DeepSeek UE8M0 128x128 -> MXFP8 1x32,
128x128 -> 64x64 (power-of-two or float scales alike), E8M0 bytes -> F32 multipliers.

`widen` is the one exact conversion that changes the element: MXFP4-style E2M1 with 1x32 E8M0 scales
to E4M3 with square tile scales, by DeepSeek-V4's own converter rule (`fp4_to_fp8`); it reports
whether every value was kept (a tile spanning 15 or more binades loses its smallest ones).
"""

from __future__ import annotations

import numpy as np

from ..errors import RelayoutError
from . import nvfp4
from . import storage as st
from .fp4_to_fp8 import FP4_BLOCK, fp4_to_fp8
from .scheme import BlockKind, BlockShape, ScaleStorage, Scheme
from .tensor import QuantizedTensor


def _block_map(dim: int, src: int, dst: int) -> np.ndarray | None:
    """Source block index of each target block along one axis, or None if a target block straddles two."""
    start = np.arange(-(-dim // dst)) * dst
    first, last = start // src, (np.minimum(start + dst, dim) - 1) // src
    return first if np.array_equal(first, last) else None


def _structure(src: Scheme, dst: Scheme, shape: tuple[int, ...]) -> str | None:
    if src.element.name != dst.element.name:
        return f"elements differ ({src.element.name} -> {dst.element.name}): codes cannot be kept"
    for d, es, ed in zip(shape, src.block.extents(shape), dst.block.extents(shape)):
        if _block_map(d, es, ed) is None:
            return f"{dst.block} blocks do not nest in {src.block} blocks of a {list(shape)} tensor"
    if (src.storage is ScaleStorage.E4M3_TENSOR) != (dst.storage is ScaleStorage.E4M3_TENSOR):
        return f"{src.storage.value} scales cannot become {dst.storage.value} scales exactly"
    return None


def blocker(src: Scheme, dst: Scheme, shape) -> str | None:
    """Why a tensor of `shape` in `src` cannot be re-laid out into `dst` exactly (None: it can).

    Decided from the schemes alone: whether the scales are powers of two is taken from the source's
    scale rule (a checkpoint's config or scale dtype says so); `relayout` still checks every value.
    """
    why = _structure(src, dst, tuple(shape))
    if why or src.scale_rule.power_of_two:
        return why
    if dst.storage is ScaleStorage.E8M0:
        return f"the source's scales are not all powers of two ({src.scale_rule.value} rule), as E8M0 needs"
    if dst.storage in (ScaleStorage.BFLOAT16, ScaleStorage.FLOAT16) and src.storage is ScaleStorage.FLOAT32:
        return f"the source's float32 scales ({src.scale_rule.value} rule) need not be {dst.storage.value} values"
    return None


def rounding(src: Scheme, dst: Scheme) -> str | None:
    """Why a re-layout that keeps every code may still move values by one float32 rounding (None: it
    cannot): NVFP4's tensor scale changing convention (divisor g <-> multiplier 1/g)."""
    if src.storage is ScaleStorage.E4M3_TENSOR is dst.storage and nvfp4.divides(src.scale_rule) != nvfp4.divides(
        dst.scale_rule
    ):
        return (
            "the NVFP4 tensor scale changes convention (g <-> fp32(1/g)): exact where 1/g is a power of two, "
            "else some block multipliers move by one float32 rounding"
        )
    return None


def relayout(q: QuantizedTensor, scheme: Scheme) -> QuantizedTensor:
    """`q`'s codes under `scheme`'s blocks and scale storage, dequantizing to the same values.

    Args:
        q: a NumPy QuantizedTensor.
        scheme: the target scheme (same element format).
    Returns:
        A NumPy QuantizedTensor in `scheme`. Raises RelayoutError where a value would change.
    """
    shape = tuple(q.shape)
    why = _structure(q.scheme, scheme, shape)
    if why:
        raise RelayoutError(why)
    maps = [
        _block_map(d, es, ed) for d, es, ed in zip(shape, q.scheme.block.extents(shape), scheme.block.extents(shape))
    ]
    index = np.ix_(*maps)
    s = np.asarray(q.scale_fp32, np.float32)[index]
    tensor_scale = q.tensor_scale
    if scheme.storage is ScaleStorage.E4M3_TENSOR:  # the E4M3 block scales move; the tensor scale stays ...
        stored = np.asarray(q.scale)[index]
        if rounding(q.scheme, scheme):  # ... in the target's convention (see `rounding`)
            tensor_scale = float(nvfp4.convert_tensor_scale(q.tensor_scale, q.scheme.scale_rule, scheme.scale_rule))
            s = nvfp4.block_multipliers(stored.view(np.uint8), tensor_scale, scheme.scale_rule)
    else:
        stored = st.store(s, scheme.storage)
        same = st.load(stored, scheme.storage) == s
        if not (same | np.isnan(s)).all():
            bad = tuple(int(i) for i in np.argwhere(~(same | np.isnan(s)))[0])
            why = "the scales are not all powers of two" if scheme.storage is ScaleStorage.E8M0 else "not exact"
            raise RelayoutError(f"scale {float(s[bad])!r} of block {bad} is no {scheme.storage.value} value ({why})")
    return QuantizedTensor(
        codes=np.asarray(q.codes),
        scale=stored,
        scale_fp32=s,
        shape=shape,
        scheme=scheme,
        role=q.role,
        src_dtype=q.src_dtype,
        framework=q.framework,
        tensor_scale=tensor_scale,
    )


def widen_blocker(src: Scheme, dst: Scheme, shape) -> str | None:
    """Why E2M1 codes in `src` cannot be widened to E4M3 in `dst` by DeepSeek's rule (None: they can).

    src: E2M1, 1x32 blocks along one of the last two axes, power-of-two scales; dst: E4M3, a square
    tile over the last two axes (a multiple of 32) that divides both of them; F32 or E8M0 scales."""
    shape = tuple(shape)
    if src.element.name != "float4_e2m1fn" or dst.element.name != "float8_e4m3fn":
        return f"only E2M1 widens to E4M3, not {src.element.name} to {dst.element.name}"
    b, t = src.block, dst.block
    if (
        len(shape) < 2
        or b.kind is not BlockKind.VECTOR
        or b.size != (FP4_BLOCK,)
        or b.axis % len(shape) < len(shape) - 2
        or not src.scale_rule.power_of_two
    ):
        return f"the source is not 1x{FP4_BLOCK} power-of-two blocks along one of the last two axes ({src.block})"
    if t.kind is not BlockKind.TILE or t.size[0] != t.size[1] or t.size[0] % FP4_BLOCK:
        return f"the target blocks {t} are not a square tile of a multiple of {FP4_BLOCK}"
    if shape[-1] % t.size[0] or shape[-2] % t.size[0]:
        return f"{t} tiles do not divide a {list(shape)} tensor"
    if dst.storage not in (ScaleStorage.E8M0, ScaleStorage.FLOAT32):
        return f"{dst.storage.value} scales cannot hold the tile scales"
    return None


def widened(scheme: Scheme, shape, tile: int = 128) -> Scheme | None:
    """The E4M3 scheme DeepSeek's converter widens an E2M1 scheme into for a tensor of `shape`:
    `tile` x `tile` blocks (the scheme's own where it is already a square tile: --block), power-of-two
    scales in its storage; None where E2M1 codes cannot widen so (the source's blocks: `widen_blocker`)."""
    block = scheme.block if scheme.block.kind is BlockKind.TILE else BlockShape(BlockKind.TILE, (tile, tile))
    storage = scheme.storage if scheme.storage is ScaleStorage.E8M0 else ScaleStorage.FLOAT32
    out = Scheme.build(
        "float8_e4m3fn",
        "ue8m0",
        block,
        storage=storage,
        name="fp4-to-fp8/weight",
        description="E2M1 codes widened to E4M3 by DeepSeek-V4's cast_e2m1fn_to_e4m3fn rule",
    )
    src = scheme.with_(block=BlockShape(BlockKind.VECTOR, (FP4_BLOCK,)))
    return out if scheme.scale_rule.power_of_two and widen_blocker(src, out, shape) is None else None


def widen(q: QuantizedTensor, scheme: Scheme) -> tuple[QuantizedTensor, bool]:
    """`q`'s E2M1 codes as E4M3 codes under `scheme`'s tiles (DeepSeek's converter, bytes equal).

    Args:
        q: a NumPy QuantizedTensor, E2M1 in 1x32 blocks along one of its last two axes.
        scheme: the E4M3 target (see `widen_blocker`).
    Returns:
        (the widened QuantizedTensor, whether every value was kept).
    """
    shape = tuple(q.shape)
    why = widen_blocker(q.scheme, scheme, shape)
    if why:
        raise RelayoutError(why)
    along_rows = q.scheme.block.axis % len(shape) == len(shape) - 2  # gpt-oss: [E, K, N], blocks along K
    codes = np.asarray(q.codes, np.uint8)
    scale = st.e8m0_bytes(np.asarray(q.scale_fp32, np.float32))
    if along_rows:
        codes, scale = np.swapaxes(codes, -1, -2), np.swapaxes(scale, -1, -2)
    lead = codes.shape[:-2]
    parts = [
        fp4_to_fp8(c, s, scheme.block.size[0])
        for c, s in zip(codes.reshape(-1, *codes.shape[-2:]), scale.reshape(-1, *scale.shape[-2:]))
    ]
    out = np.stack([p.codes for p in parts]).reshape(*lead, *codes.shape[-2:])
    tiles = np.stack([p.scale for p in parts]).reshape(*lead, *parts[0].scale.shape)
    if along_rows:
        out, tiles = np.swapaxes(out, -1, -2), np.swapaxes(tiles, -1, -2)
    s = st.e8m0_values(np.ascontiguousarray(tiles))
    return (
        QuantizedTensor(
            codes=np.ascontiguousarray(out),
            scale=st.store(s, scheme.storage),
            scale_fp32=s,
            shape=shape,
            scheme=scheme,
            role=q.role,
            src_dtype=q.src_dtype,
            framework=q.framework,
        ),
        all(p.lossless for p in parts),
    )
