"""NVFP4's two-level scales as each ecosystem stores them, and how to move between them.

E2M1 codes in blocks of 16 along the last axis, one E4M3 block scale s per block, one float32 per tensor:

* compressed-tensors (llm-compressor NVFP4 / NVFP4A16) stores a DIVISOR g, `weight_global_scale`:
  g = 2688 / amax_t computed in the weight's dtype (bf16: bf16(bf16(1/amax_t) * 2688), since torch
  evaluates `2688 / t` as `t.reciprocal() * 2688`), s = e4m3(fp32(g * dt(amax16 / 6))) with a zero
  block scale replaced by 0.125, elements e2m1(clamp(x / fp32(s / g), -6, 6)); it dequantizes
  code * fp32(s / g) (its `_dequantize`, then cast to bf16).
* NVIDIA ModelOpt stores a MULTIPLIER p, `weight_scale_2` = amax_t / 2688 (float32), and every
  reader multiplies: code * s * p (vLLM's modelopt path folds p into its GEMM alpha).
* compressed-tensors' own converter (`ModelOptNvfp4Converter`, 0.20) maps p -> fp32(1 / p) and
  `input_scale` -> fp32(1 / input_scale).

fp32(s / g) and fp32(s * fp32(1 / g)) are the same number for every s when 1/g is exact in float32 (g
a power of two); otherwise they can differ by one float32 ulp in some blocks. `conversion_report`
measures it for given scales.
All arithmetic below is float32 NumPy (bf16 steps rounded with ml_dtypes, round to nearest even).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ..codec.profiles import resolve
from ..codec.reference import decode, encode
from ..errors import UnsupportedInputError

F32 = np.float32
BF16 = ml_dtypes.bfloat16
E4M3, _E4M3_RULES = resolve("float8_e4m3fn")
E2M1, _E2M1_RULES = resolve("float4_e2m1fn", "ocp-mx")
GLOBAL_NUMERATOR = F32(E4M3.max * E2M1.max)  # 448 * 6 = 2688
ZERO_BLOCK_SCALE = F32(0.125)  # compressed-tensors' `_get_dtype_eps(float8_e4m3fn)`
BLOCK = 16
_DTYPES = {"bfloat16": BF16, "float32": F32}


def ct_scheme():
    """The weight Scheme of the `ct-nvfp4` preset (compressed-tensors NVFP4; one tensor, its own amax,
    bf16 arithmetic); its QuantizedTensor.tensor_scale is the DIVISOR g (see `divides`)."""
    from .presets import get_preset

    return get_preset("ct-nvfp4").weight


def divides(rule) -> bool:
    """Whether a scheme's NVFP4 tensor scale is a divisor (compressed-tensors' g: rule ct_nvfp4) rather
    than a multiplier (ModelOpt's weight_scale_2, torchao: rule nvfp4)."""
    from .rules import ScaleRule

    return rule is ScaleRule.CT_NVFP4


def block_multipliers(scale_codes, tensor_scale, rule) -> np.ndarray:
    """float32 dequantization multiplier per block in the convention of `rule`: fp32(s / g) or fp32(s * p)."""
    return ct_multiplier(scale_codes, tensor_scale) if divides(rule) else modelopt_multiplier(scale_codes, tensor_scale)


def convert_tensor_scale(t, src_rule, dst_rule) -> np.float32:
    """A tensor scale moved between conventions: kept, or fp32(1 / t) (g <-> p, as compressed-tensors'
    ModelOptNvfp4Converter). Exact when t is a power of two; `conversion_report` measures the rest."""
    t = F32(t)
    return t if divides(src_rule) == divides(dst_rule) else F32(ct_global_from_modelopt(t))


def _in(dtype: str):
    if dtype not in _DTYPES:
        raise UnsupportedInputError(f"compressed-tensors NVFP4 arithmetic dtype {dtype!r}; valid: {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _round(a, dt) -> np.ndarray:
    """float32 values rounded to dt (RNE) and back to float32."""
    return np.asarray(a, F32).astype(dt).astype(F32)


def ct_global_scale(amax_t, dtype: str = "bfloat16") -> np.ndarray:
    """compressed-tensors' `generate_gparam`: g = 2688 / max(amax_t, tiny) in the weight's dtype.

    Args:
        amax_t: the tensor's (or fused group's: q/k/v, gate/up share one) absolute maximum.
        dtype: the weight dtype the tool computed in ('bfloat16' for BF16 checkpoints, 'float32').
    Returns:
        float32 array of g; a NaN or Inf result becomes 1.0 as in the tool.
    """
    dt = _in(dtype)
    tiny = F32(2.0**-126)  # torch.finfo(bf16 or f32).tiny
    a = np.maximum(np.asarray(amax_t, F32), tiny)
    with np.errstate(all="ignore"):
        g = _round(_round(F32(1) / a, dt) * GLOBAL_NUMERATOR, dt)
    return np.where(np.isfinite(g), g, F32(1)).astype(F32)


def ct_block_scales(amax16, g, dtype: str = "bfloat16") -> np.ndarray:
    """E4M3 codes (uint8) of the block scales s = e4m3(fp32(g * dt(amax16 / 6))); a zero gives 0.125."""
    dt = _in(dtype)
    with np.errstate(all="ignore"):
        local = _round(np.asarray(amax16, F32) / F32(E2M1.max), dt)
        s = np.clip((F32(g) * local).astype(F32), -E4M3.max, E4M3.max)
    codes = encode(s.astype(np.float64), E4M3, _E4M3_RULES)
    zero = decode(codes, E4M3) == 0
    return np.where(zero, encode(np.float64(ZERO_BLOCK_SCALE), E4M3, _E4M3_RULES), codes).astype(np.uint8)


def ct_unsigned_zero(codes, y) -> np.ndarray:
    """compressed-tensors' FP4 cast gives code 0 (+0) where the scaled value is exactly +-0 (it
    multiplies by torch.sign, which is 0 there), but code 8 (-0) for a negative value rounded to zero.
    (Its bf16 MX division can also round a value under 2^-134 to zero, here kept in float32: a
    bf16-subnormal element in a block whose scale is >= 2 would differ in its sign bit only.)"""
    return np.where(np.asarray(y) == 0, np.uint8(0), codes).astype(np.uint8)


def ct_multiplier(scale_codes, g) -> np.ndarray:
    """fp32(s / g): compressed-tensors' effective per-block dequantization multiplier."""
    with np.errstate(all="ignore"):
        return (decode(np.asarray(scale_codes, np.uint8), E4M3) / F32(g)).astype(F32)


def ct_multiplier_0d(scale_codes, g) -> np.ndarray:
    """bf16(fp32(s / g)): compressed-tensors' multiplier when `weight_global_scale` is 0-d, as its
    ModelOptNvfp4Converter writes it (torch keeps a bf16 tensor divided by a 0-d float32 tensor in
    bf16); llm-compressor writes shape [1], which promotes to float32 (`ct_multiplier`)."""
    return _round(ct_multiplier(scale_codes, g), BF16)


def modelopt_multiplier(scale_codes, scale_2) -> np.ndarray:
    """fp32(s * p): ModelOpt's per-block multiplier (`weight_scale` times `weight_scale_2`)."""
    return (decode(np.asarray(scale_codes, np.uint8), E4M3) * F32(scale_2)).astype(F32)


def ct_quantize(x, amax_t=None, dtype: str = "bfloat16"):
    """BF16/F32 weight [..., K] -> (E2M1 codes [..., K], E4M3 scale codes [..., K/16], g) as
    llm-compressor writes NVFP4A16. amax_t: the fused group's amax when tensors share g (default:
    this tensor's). K must be a multiple of 16 (the tool refuses other widths too)."""
    x = np.asarray(x, F32)
    if x.shape[-1] % BLOCK:
        raise UnsupportedInputError(f"NVFP4 needs the last dimension to be a multiple of {BLOCK}, got {x.shape}")
    xb = x.reshape(*x.shape[:-1], -1, BLOCK)
    amax16 = np.abs(xb).max(axis=-1) if x.size else np.zeros(xb.shape[:-1], F32)
    g = ct_global_scale(np.abs(x).max() if amax_t is None else amax_t, dtype)
    s = ct_block_scales(amax16, g, dtype)
    with np.errstate(all="ignore"):
        y = np.clip((xb / ct_multiplier(s, g)[..., None]).astype(F32), -E2M1.max, E2M1.max)
    codes = ct_unsigned_zero(encode(y.astype(np.float64), E2M1, _E2M1_RULES), y).reshape(x.shape)
    return codes, s, F32(g)


def dequantize(codes, multiplier, signed_zero: bool = True) -> np.ndarray:
    """float32 code * multiplier, the multiplier given per 16-element block.

    signed_zero: code 8 decodes to -0 (compressed-tensors, transformers' gpt-oss table) or, False,
    to +0 (ModelOpt's and DeepSeek's E2M1 tables, ggml's int8 table)."""
    codes = np.asarray(codes, np.uint8)
    m = np.repeat(np.asarray(multiplier, F32), BLOCK, axis=-1)
    v = decode(codes, E2M1) * m
    return (v if signed_zero else v + F32(0)).astype(F32)


def ct_global_from_modelopt(scale_2) -> np.ndarray:
    """`weight_global_scale` from ModelOpt's `weight_scale_2` (or input_scale): fp32(1 / p), as
    compressed-tensors' ModelOptNvfp4Converter does."""
    with np.errstate(divide="ignore"):
        return (F32(1) / np.asarray(scale_2, F32)).astype(F32)


def modelopt_from_ct_global(g) -> np.ndarray:
    """ModelOpt's `weight_scale_2` from compressed-tensors' g: fp32(1 / g), the same reciprocal."""
    return ct_global_from_modelopt(g)


def conversion_report(scale_codes, g) -> dict:
    """How far moving g to ModelOpt's p = fp32(1/g) is from exact, over the given block scales.

    Returns:
        dict: 'reciprocal_exact' (1/g exact in float32), 'roundtrip_exact' (fp32(1/fp32(1/g)) == g),
        'multiplier_mismatch' (blocks where fp32(s * p) != fp32(s / g)).
    """
    g = F32(g)
    p = modelopt_from_ct_global(g)
    exact = bool(np.float64(p) * np.float64(g) == 1.0)
    back = ct_global_from_modelopt(p)
    diff = modelopt_multiplier(scale_codes, p).view(np.uint32) != ct_multiplier(scale_codes, g).view(np.uint32)
    return {"reciprocal_exact": exact, "roundtrip_exact": bool(back == g), "multiplier_mismatch": int(diff.sum())}
