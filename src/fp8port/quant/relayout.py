"""Exact re-layout: a QuantizedTensor's codes under other blocks or another scale storage.

Codes are kept; each target block takes the scale of the one source block that contains it
(replicated where the target blocks are finer), stored in the target's scale storage. Exact when
every target block nests inside a source block and every scale fits the target storage; anything
else raises RelayoutError. Every layout writer shares this: DeepSeek UE8M0 128x128 -> MXFP8 1x32,
128x128 -> 64x64 (power-of-two or float scales alike), E8M0 bytes -> F32 multipliers.
"""

from __future__ import annotations

import numpy as np

from ..errors import RelayoutError
from . import storage as st
from .scheme import Scheme, ScaleStorage
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
    if dst.storage is ScaleStorage.BFLOAT16 and src.storage is ScaleStorage.FLOAT32:
        return f"the source's float32 scales ({src.scale_rule.value} rule) need not be bfloat16 values"
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
    maps = [_block_map(d, es, ed) for d, es, ed in zip(shape, q.scheme.block.extents(shape),
                                                         scheme.block.extents(shape))]
    index = np.ix_(*maps)
    s = np.asarray(q.scale_fp32, np.float32)[index]
    if scheme.storage is ScaleStorage.E4M3_TENSOR:  # the E4M3 block scales move, the tensor scale stays
        stored = np.asarray(q.scale)[index]
    else:
        stored = st.store(s, scheme.storage)
        same = st.load(stored, scheme.storage) == s
        if not (same | np.isnan(s)).all():
            bad = tuple(int(i) for i in np.argwhere(~(same | np.isnan(s)))[0])
            why = "the scales are not all powers of two" if scheme.storage is ScaleStorage.E8M0 else "not exact"
            raise RelayoutError(f"scale {float(s[bad])!r} of block {bad} is no {scheme.storage.value} value ({why})")
    return QuantizedTensor(codes=np.asarray(q.codes), scale=stored, scale_fp32=s, shape=shape, scheme=scheme,
                           role=q.role, src_dtype=q.src_dtype, framework=q.framework, tensor_scale=q.tensor_scale)
