"""Reference block-scaled quantization: plain NumPy, written to be obviously right.

  1. zero-pad every blocked axis to a multiple of the block (padding never raises amax);
  2. view the padded tensor as (g0, b0, g1, b1, ...) and take amax over the block axes;
  3. the scale rule turns each amax into s (float32), stored and read back in its storage;
  4. y = x / s (or x * fp32(1/s)) in float32, cropped to the real elements;
  5. codes = codec reference `encode(y)` under the scheme's element rules.
The input is a float32 array (api.py converts); all arithmetic is float32 as in every anchor.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ..codec.profiles import resolve
from ..codec.reference import decode, encode
from ..errors import NonFiniteError, ShapeError
from . import nvfp4
from . import storage as st
from .rules import ScaleRule, pow2, rceil
from .scheme import Apply, ScaleStorage, Scheme, ZeroBlock

F32 = np.float32


def _blocked(x: np.ndarray, ext):
    """Zero-padded view of x as (g0, b0, g1, b1, ...)."""
    grid = [-(-d // b) for d, b in zip(x.shape, ext)]
    xp = np.zeros([g * b for g, b in zip(grid, ext)], dtype=x.dtype)
    xp[tuple(slice(0, d) for d in x.shape)] = x
    inter = [v for g, b in zip(grid, ext) for v in (g, b)]
    return xp.reshape(inter), tuple(range(1, 2 * x.ndim, 2))


def _expand(g: np.ndarray, ext) -> np.ndarray:
    """A grid broadcast against the (g0, b0, g1, b1, ...) view."""
    shape = [v for n in g.shape for v in (n, 1)]
    return g.reshape(shape)


def _crop(yb: np.ndarray, shape) -> np.ndarray:
    padded = [yb.shape[2 * i] * yb.shape[2 * i + 1] for i in range(len(shape))]
    return yb.reshape(padded)[tuple(slice(0, d) for d in shape)]


def check_finite(x: np.ndarray) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        i = tuple(int(j) for j in np.unravel_index(int(np.flatnonzero(bad.ravel())[0]), x.shape))
        raise NonFiniteError(
            f"non-finite input at index {i}: {x[i]!r}; pass nonfinite='propagate' to quantize it "
            "anyway (NaN/Inf then follow the scale rule), or clean the tensor first"
        )


def _apply(xb, s_b, apply: Apply):
    with np.errstate(all="ignore"):
        if apply is Apply.RECIPROCAL:
            y = (xb * (F32(1) / s_b).astype(F32)).astype(F32)
        elif apply is Apply.RECIPROCAL_UNROUNDED:
            y = (xb * np.where(s_b == 0, F32(0), F32(1) / s_b).astype(F32)).astype(F32)
        else:
            y = (xb / s_b).astype(F32)
        if apply is Apply.BF16_DIVIDE:
            y = y.astype(ml_dtypes.bfloat16).astype(F32) + F32(0)
        elif apply is Apply.MSMODELSLIM_MXFP8:
            y = np.where(y == 0, F32(0), y)  # torch.sign(-0.0) is +0: -0 and underflows lose the sign
        elif apply is Apply.MSMODELSLIM_MXFP4:
            y = np.where(xb == 0, F32(0), y)  # the sign comes from x: only +-0 inputs lose it
    # NaN times NaN returns either operand depending on operand order; fix it: a NaN input keeps
    # its own sign and payload
    return np.where(np.isnan(xb), xb, y)


def _nvfp4(xb, amax, scheme, tensor_amax=None):
    """(s_fp32, stored e4m3 codes, per-tensor scale, the element multiplier) of NVFP4.
    tensor_amax: the amax the tensor scale is computed from (a fused group's), else this tensor's."""
    e4m3, r4 = resolve("float8_e4m3fn")
    tmax = F32(tensor_amax) if tensor_amax is not None else F32(np.max(amax)) if amax.size else F32(0)
    with np.errstate(all="ignore"):
        p = F32(tmax / F32(e4m3.max * scheme.element.max))
        if p == 0:
            p = F32(1)
        blk = (amax / F32(scheme.element.max)).astype(F32)
        bs = np.clip((blk / p).astype(F32), F32(e4m3.min_normal), F32(e4m3.max))
        codes = encode(bs.astype(np.float64), e4m3, r4)
        s_blk = decode(codes, e4m3)
        recip = ((F32(1) / p).astype(F32) / s_blk).astype(F32)
        s = (p * s_blk).astype(F32)
    return s, codes, p, recip


def _mse(xb, axes, amax, scheme):
    """Per block, the power of two among the RCEIL exponent and the two below it with the
    least squared error (elements encoded by the codec, as in the final pass)."""
    s_c = rceil(amax, scheme.element, scheme)
    _, e_c = np.frexp(np.where(np.isfinite(s_c), s_c, 1).astype(np.float64))
    e_c = e_c - 1
    lo, hi = scheme.exp_range
    best_s, best_err = s_c, None
    x64 = xb.astype(np.float64)
    for d in (0, 1, 2):
        s = pow2(np.clip(e_c - d, lo, hi))
        s_b = _expand(s, None)
        y = _apply(xb, s_b, Apply.DIVIDE)
        deq = decode(encode(y.astype(np.float64), scheme.element, scheme.rules), scheme.element)
        with np.errstate(all="ignore"):
            err = np.sum((deq.astype(np.float64) * s_b - x64) ** 2, axis=axes)
        if best_err is None:
            best_err = err
            continue
        better = err < best_err
        best_s = np.where(better, s, best_s).astype(F32)
        best_err = np.where(better, err, best_err)
    return np.where(np.isfinite(s_c), best_s, s_c).astype(F32)


def _ct_nvfp4(x, scheme, tensor_amax=None, dtype="bfloat16"):
    """compressed-tensors NVFP4 on one tensor (its own amax unless a fused group's is given; arithmetic
    in `dtype`, the weight's: bf16 as llm-compressor on a BF16 model); the tensor scale returned is its
    divisor g (`weight_global_scale`)."""
    if scheme.block.extents(x.shape)[-1] != nvfp4.BLOCK or scheme.block.axis not in (-1, x.ndim - 1):
        raise ShapeError(f"scale rule ct_nvfp4 takes 1x{nvfp4.BLOCK} blocks along the last axis, not {scheme.block}")
    k = x.shape[-1] if x.ndim else 1
    pad = -k % nvfp4.BLOCK  # zero padding: no effect on amax; a padded block holds zeros only
    xp = np.pad(x.reshape(*x.shape[:-1], k) if x.ndim else x.reshape(1), [(0, 0)] * (max(x.ndim, 1) - 1) + [(0, pad)])
    codes, s, g = nvfp4.ct_quantize(xp, tensor_amax, dtype)
    codes = codes[..., :k].reshape(x.shape)
    return codes, s.view(ml_dtypes.float8_e4m3fn), nvfp4.ct_multiplier(s, g), g


def _finish_scales(s, amax, scheme: Scheme):
    """(s_fp32, stored) from a rule's scales: one NaN pattern (0x7FC00000) for NaN blocks, the
    zero-block choice, and the trip through the scale storage."""
    s = np.where(np.isnan(s), F32(np.nan), s).astype(F32)
    if scheme.zero_block is ZeroBlock.UNIT:
        s = np.where(amax == 0, F32(1), s).astype(F32)
    stored = st.store(s, scheme.storage)
    return st.load(stored, scheme.storage), stored


def _ct_mx_fp4(scheme: Scheme) -> bool:
    return scheme.scale_rule is ScaleRule.CT_MX and scheme.element.bits == 4


def plain_codes(scheme: Scheme) -> bool:
    """Whether the codes are the codec's encode of x / s or x * fp32(1/s), as every fast kernel computes
    them: not under compressed-tensors' MX rule for FP4 (its zeros drop their sign), nor the apply
    modes that round through bf16 or change a zero's sign (msModelSlim's)."""
    return scheme.apply in (Apply.DIVIDE, Apply.RECIPROCAL) and not _ct_mx_fp4(scheme)


def block_scales(amax: np.ndarray, scheme: Scheme) -> np.ndarray:
    """float32 scales of blocks whose amax (float32) is given, exactly as `quantize` computes them,
    for rules that depend on the amax alone (`ScaleRule.fn`; the kernels' step forms read this)."""
    amax = np.asarray(amax, F32)
    return _finish_scales(scheme.scale_rule.fn(amax, scheme.element, scheme), amax, scheme)[0]


def quantize(
    x: np.ndarray, scheme: Scheme, *, check: bool = True, tensor_amax=None, dtype: str = "bfloat16", encoder=None
):
    """(codes uint8 like x, stored scale grid, s_fp32 grid, per-tensor scale or None).

    NVFP4 rules only: tensor_amax is the amax the per-tensor scale comes from (a fused q/k/v or gate/up
    group's; default this tensor's), dtype the weight dtype compressed-tensors computes in.
    encoder(y_float32, element, rules): another element encoder for the last step (api.py passes the
    codec's fused one, tested bit for bit against the codec reference used by default)."""
    x = np.asarray(x, dtype=F32)
    if check:
        check_finite(x)
    ext = scheme.block.extents(x.shape)
    xb, axes = _blocked(x, ext)
    amax = np.max(np.abs(xb), axis=axes) if xb.size else np.zeros(scheme.block.grid(x.shape), F32)
    tensor_scale = None
    rule = scheme.scale_rule
    if rule is ScaleRule.CT_NVFP4:
        return _ct_nvfp4(x, scheme, tensor_amax, dtype)
    if rule is ScaleRule.NVFP4:
        s, codes4, tensor_scale, mult = _nvfp4(xb, amax, scheme, tensor_amax)
        stored = codes4
        y = (xb * _expand(mult, ext)).astype(F32)
    else:
        s = _mse(xb, axes, amax, scheme) if rule is ScaleRule.MSE_POW2 else rule.fn(amax, scheme.element, scheme)
        s_rule = s
        s, stored = _finish_scales(s, amax, scheme)
        y = _apply(xb, _expand(s_rule if scheme.apply is Apply.RECIPROCAL_UNROUNDED else s, ext), scheme.apply)
    y = _crop(y, x.shape)
    if encoder is None:
        codes = encode(y.astype(np.float64), scheme.element, scheme.rules)
    else:
        codes = encoder(np.ascontiguousarray(y, F32), scheme.element, scheme.rules)
    if _ct_mx_fp4(scheme):
        codes = nvfp4.ct_unsigned_zero(codes, y)
    if scheme.storage is ScaleStorage.E4M3_TENSOR:
        stored = np.asarray(stored, np.uint8).view(ml_dtypes.float8_e4m3fn)
    return codes, stored, np.asarray(s, F32), tensor_scale


def dequantize(codes: np.ndarray, s_fp32: np.ndarray, scheme: Scheme) -> np.ndarray:
    """float32 values: decode(code) * s in float32 (DeepSeek weight_dequant order)."""
    codes = np.asarray(codes, dtype=np.uint8)
    ext = scheme.block.extents(codes.shape)
    full = s_fp32
    for ax, b in enumerate(ext):
        full = np.repeat(full, b, axis=ax)
    full = full[tuple(slice(0, d) for d in codes.shape)]
    with np.errstate(all="ignore"):
        return (decode(codes, scheme.element) * full).astype(F32)
