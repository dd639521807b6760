"""Scale rules: from a block's amax (float32) to its scale s, the dequantization multiplier.

One function per rule; its docstring gives the formula and who uses it. All arithmetic is
float32 (every anchor computes scales in float32), except msModelSlim's, which rounds each step
to bf16 as torch does on a bf16 model. Power-of-two rules return exactly 2^E with
E inside the scheme's `exp_range`; NaN stands for "this block is NaN" (E8M0 byte 0xFF).
The two rules that need more than the amax (NVFP4, MSE) live in reference.py / fast.py callers
through `block_scales` and `nvfp4_scales` below.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ..names import NamedEnum

F32 = np.float32
MANT = 0x7FFFFF
_E2M1_MBITS = 1  # compressed-tensors rounds MX amax at FP4 E2M1 mantissa width


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=F32).view(np.uint32).astype(np.int64)


def pow2(e: np.ndarray) -> np.ndarray:
    """float32 2^e for integer e in [-127, 127] (2^-127 is the float32 subnormal 0x00400000)."""
    return np.ldexp(np.ones(np.shape(e)), np.asarray(e, dtype=np.int64)).astype(F32)


def _finish_pow2(e, nan, scheme) -> np.ndarray:
    lo, hi = scheme.exp_range
    s = pow2(np.clip(e, lo, hi))
    return np.where(nan, F32(np.nan), s).astype(F32)


def _clamped(amax, scheme):
    a = amax.astype(F32)
    if scheme.amax_clamp is not None:
        a = np.maximum(a, F32(scheme.amax_clamp))  # np.maximum keeps NaN, like torch.clamp
    return a


def _over_max(a, elem) -> np.ndarray:
    with np.errstate(all="ignore"):
        return (a / F32(elem.max)).astype(F32)


def ue8m0_bitwise(amax, elem, scheme):
    """DeepSeek UE8M0: s = 2^ceil(log2(max(amax, 1e-4) / 448)) on the float32 bits.

    r = fp32(max(amax, clamp) / elem.max); E = exponent_field(r) - 127 + (mantissa(r) != 0),
    clamped to the scheme's exp_range ([-126, 127] = biased [1, 254] in DeepGEMM).
    Users: DeepGEMM `ceil_to_ue8m0` / `per_token_cast_to_fp8(use_ue8m0=True)`, vLLM and SGLang
    requantization for DeepGEMM, DeepSeek-V3.2 TileLang `fast_round_scale`. NaN amax reads as
    exponent field 255 (+1), clamped to 2^127: DeepGEMM gives NaN blocks a finite scale (T14).
    """
    b = _bits(_over_max(_clamped(amax, scheme), elem))
    e = ((b >> 23) & 0xFF) + ((b & MANT) != 0) - 127
    return _finish_pow2(e, np.zeros(e.shape, bool), scheme)


def log2_ceil_f32(amax, elem, scheme):
    """Float-log2 ceil: s = exp2(ceil(log2(fp32(max(amax, 1e-4) / 448)))) with log2 in float32.

    Users: DeepSeek-V3 `inference/kernel.py` `act_quant(scale_fmt="ue8m0")`, vLLM's Triton path,
    torchao 0.18 RCEIL fallback. float32 log2 rounds to the integer k just above 2^k, so the scale
    comes out one binade too small at T6 near-ties (numpy float32 log2, as torch CPU). Not clamped
    to exp_range: zero and Inf follow IEEE (s = 0 or Inf, then 0/0 and Inf/Inf give NaN).
    """
    r = _over_max(_clamped(amax, scheme), elem)
    with np.errstate(all="ignore"):
        return np.exp2(np.ceil(np.log2(r))).astype(F32)


def v3_float(amax, elem, scheme):
    """DeepSeek-V3 float scale: s = fp32(max(amax, 1e-4) / 448), elements x / s.

    Users: DeepSeek-V3 checkpoints (`weight_scale_inv`, F32) and `act_quant` without scale_fmt;
    DeepGEMM `use_ue8m0=False` (which multiplies by 1/s: Apply.RECIPROCAL).
    """
    return _over_max(_clamped(amax, scheme), elem)


def _floor_log2(a):
    """Exact floor(log2 a) for float32 a > 0 (subnormals included); -inf-like for 0."""
    m, e = np.frexp(a.astype(np.float64))
    return np.where(a > 0, e - 1, -(1 << 20))


def _ceil_log2(a):
    m, e = np.frexp(a.astype(np.float64))
    return np.where(a > 0, np.where(m == 0.5, e - 1, e), -(1 << 20))


def _ocp_finish(e, a, scheme):
    return _finish_pow2(e, ~np.isfinite(a), scheme)


def ocp_floor(amax, elem, scheme):
    """OCP MX FLOOR: s = 2^(floor(log2 amax) - emax_elem), clamped to [2^-127, 2^127].

    emax_elem = floor(log2(element max)) (8 for E4M3). The block max may land above the element
    max (up to 1.99 * 2^emax): elements must saturate (the spec's clamp).
    Users: OCP MX v1.0 §6.3, microxcaling, torchao `to_mx` default. NaN or Inf amax -> NaN (0xFF),
    as torchao main and microxcaling (torchao 0.18 gives Inf blocks 2^120).
    """
    a = _clamped(amax, scheme)
    return _ocp_finish(_floor_log2(a) - elem.emax, a, scheme)


def ocp_ceil(amax, elem, scheme):
    """CEIL: s = 2^(ceil(log2 amax) - emax_elem). Users: torchao ScaleCalculationMode.CEIL.

    Never clips, but moves amax = 448 (an exact power-of-two multiple) a binade up (D1).
    """
    a = _clamped(amax, scheme)
    return _ocp_finish(_ceil_log2(a) - elem.emax, a, scheme)


def ocp_even(amax, elem, scheme):
    """EVEN: round amax to the element's mantissa width (float32 bits + 2^(22-mbits), ties up),
    then FLOOR. Users: torchao ScaleCalculationMode.EVEN. Protects amax 500 but not 480 (D1).
    A carry into the Inf exponent gives NaN, as torchao."""
    a = _clamped(amax, scheme)
    b = _bits(a)
    r = (b + (1 << (22 - elem.mbits))) & 0x7F800000
    f = (r >> 23) & 0xFF
    return _finish_pow2(f - 127 - elem.emax, ~np.isfinite(a) | (f == 255), scheme)


def rceil(amax, elem, scheme):
    """RCEIL: s = 2^ceil(log2(fp32(amax / elem.max))) from the float32 bits.

    e = exponent_field(r), plus one if mantissa(r) > 0 and e != 254 and not (e == 0 and
    mantissa <= 0x400000); NaN -> 0xFF, Inf -> 0xFE (2^127), 0 -> 0x00 (2^-127).
    Users: NVIDIA TransformerEngine `float_to_e8m0` (and Blackwell `cvt.rp.satfinite.ue8m0x2`),
    cuBLAS MX recipe, torchao main RCEIL (0.18 uses float log2: see log2_ceil_f32).
    """
    a = _clamped(amax, scheme)
    b = _bits(_over_max(a, elem))
    f, m = (b >> 23) & 0xFF, b & MANT
    up = (m > 0) & (f != 254) & ~((f == 0) & (m <= 0x400000))
    e = np.where(f == 255, 254, f + up) - 127
    return _finish_pow2(e, np.isnan(a), scheme)


def ct_mx(amax, elem, scheme):
    """compressed-tensors MX: round amax at m mantissa bits (ties up), keep its exponent E, s = 2^(E - emax).

    On the float32 bits b of amax: f = exponent_field((b + 2^(22 - m)) & 0xFF800000); the E8M0 byte is
    clamp(f - emax_elem, 0, 255), so 0 (a zero or tiny block) gives 2^-127 and Inf / NaN give 0xFF (NaN).
    m is E2M1's mantissa width (1) for 4- and 8-bit elements, even E4M3: compressed-tensors 0.19 and 0.20
    pass FP4's width for both (MXFP8 then takes amax in [1.75, 2) * 2^k a binade up and never clips);
    0.20 uses E2M3's 3 bits for 6-bit elements. Equals its `generate_mx_scales` byte for byte on bf16 and
    float32 weights (tests/peers/test_ct_rules.py runs its code); fp16 weights round in fp16 there.
    Users: compressed-tensors `quantization/utils/mxfp_utils.py`, hence llm-compressor MXFP4 / MXFP8.
    """
    m = elem.mbits if elem.bits == 6 else _E2M1_MBITS
    b = _bits(_clamped(amax, scheme))
    f = (((b + (1 << (22 - m))) & 0xFF800000) >> 23) & 0xFF
    return _finish_pow2(f - elem.emax - 127, f == 255, scheme)


# ---- msModelSlim 26.1.0 (Huawei's AscendV1 writer; issue 24) ------------------------------------
# Its quantizers run in the weight's own dtype: on a bf16 model every torch op rounds to bf16,
# python scalars included. The msmodelslim_* rules reproduce that (what it does to bf16 checkpoints,
# checked on every positive bf16 amax); the `_f32` twins are the same code on a float32 model.
# Paths are inside the msmodelslim package (site-packages/msmodelslim/).

MSMODELSLIM_EPS = F32(np.finfo(np.float32).eps)  # calculate_int_qparam's scale floor


def _bf16(x) -> np.ndarray:
    """float32 -> bf16 (round to nearest even) -> float32: one torch op on bf16 tensors."""
    return np.asarray(x, F32).astype(ml_dtypes.bfloat16).astype(F32)


def _arith(bf16: bool):
    return _bf16 if bf16 else (lambda x: np.asarray(x, F32))


def _eps_floor(elem) -> np.float32:
    """float32 eps per integer step (min_subnormal is one step of an INT element: 2^-mbits)."""
    return F32(MSMODELSLIM_EPS / F32(elem.min_subnormal))


def _log2(a) -> np.ndarray:
    """float32 log2, correctly rounded (through float64); torch's gives the same on every bf16 input."""
    with np.errstate(all="ignore"):
        return np.log2(np.asarray(a, np.float64)).astype(F32)


def _msmodelslim_int(amax, elem, scheme, bf16=True):
    r = _arith(bf16)
    with np.errstate(all="ignore"):
        s = r(r(amax) / F32(elem.max))
    return np.maximum(s, _eps_floor(elem)).astype(F32)


def msmodelslim_int(amax, elem, scheme):
    """msModelSlim symmetric int (minmax, per channel): s = max(bf16(amax / qmax), eps), in bf16.

    ir/api/impl/int_quantization.py `calculate_int_qparam` (symmetric branch): scale =
    max(-min, max) / (2^(bits-1) - 1), then torch.max(scale, float32 eps), all in the weight's dtype
    (bf16: the quotient rounds to nearest even, not up). Elements: `int_quantize` divides in bf16 too
    (Apply.BF16_DIVIDE), rounds half to even and clamps to [-2^(bits-1), 2^(bits-1) - 1].
    With an INT element (value code * 2^-mbits) the scale here is 2^mbits times msModelSlim's
    `weight_scale`. Users: W8A16, W8A8_DYNAMIC (int8) and W4A8_DYNAMIC (int4) weights.
    """
    return _msmodelslim_int(amax, elem, scheme, True)


def msmodelslim_int_f32(amax, elem, scheme):
    """msmodelslim_int on a float32 model: s = max(fp32(amax / qmax), eps). Users: msModelSlim on
    float32 weights (elements then divide in float32: Apply.DIVIDE)."""
    return _msmodelslim_int(amax, elem, scheme, False)


def _msmodelslim_mx(amax, elem, scheme, bf16=True):
    r = _arith(bf16)
    a = r(amax)
    a = np.where(a == 0, F32(2.0**-126), a)  # FP32_MIN_NORMAL * (max_val == 0)
    e = np.floor(r(_log2(a))) - elem.emax
    big = ~(e <= 127)  # NaN, or above the E8M0 range: NaN (0xFF)
    return _finish_pow2(np.where(big, 0, e).astype(np.int64), big, scheme)


def msmodelslim_mx(amax, elem, scheme):
    """msModelSlim MXFP8: s = 2^(floor(bf16(log2 amax)) - emax_elem); zero blocks 2^-127.

    ir/api/impl/mx_quantization.py `calculate_mx_qparam`: shared_exp = floor(log2(max_val +
    2^-126 * (max_val == 0))) - emax, NaN above 127, clamped to >= -127. On a bf16 model log2 is
    rounded to bf16, so an amax just below 2^k (within 2^-8 relative for |log2| in [4, 8)) takes
    exponent k: OCP FLOOR's scale times two (33 of 27,648 SmolLM2 down_proj blocks).
    Elements (`mxfp_per_block_quantize`): x / s in float32, zero quotients +0 (Apply.MSMODELSLIM_MXFP8),
    rounded to the element's mantissa half away from zero (`sign * floor(|a| + 0.5)`), clamped to
    +-448: codec profile `msmodelslim`.
    Users: W8A8_MXFP8 weights, and MXFP8 activations of W4A8_MXFP.
    """
    return _msmodelslim_mx(amax, elem, scheme, True)


def msmodelslim_mx_f32(amax, elem, scheme):
    """msmodelslim_mx on a float32 model: log2 in float32 (OCP FLOOR except within ~1e-7 below 2^k).
    Users: msModelSlim on float32 weights."""
    return _msmodelslim_mx(amax, elem, scheme, False)


def _msmodelslim_mxfp4(amax, elem, scheme, bf16=True):
    r = _arith(bf16)
    with np.errstate(all="ignore"):
        t = r(r(amax) / F32(1 - 0.5 ** (elem.mbits + 2)))
        t = r(t + r(F32(9.6e-7)))
    e = np.floor(r(_log2(t))) - elem.emax
    e = np.clip(e, -127 - elem.emax, 127 - elem.emax)  # as written; the +9.6e-7 keeps e >= -22 anyway
    nan = np.isnan(e)
    return _finish_pow2(np.where(nan, 0, e).astype(np.int64), nan, scheme)


def msmodelslim_mxfp4(amax, elem, scheme):
    """msModelSlim MXFP4: s = 2^(floor(bf16(log2(bf16(amax / 0.875) + 9.6e-7))) - emax_elem).

    ir/api/impl/mx_quantization.py `calculate_mxfp4_qparam`: 0.875 = 1 - 2^-(mbits + 2), so an
    amax whose mantissa rounds up past 1.75 (the E2M1 tie above 6) takes the next binade: EVEN's
    threshold, in bf16 arithmetic (the +9.6e-7 is itself a bf16 scalar). Zero blocks give 2^-22.
    Clipped to [-127 - emax, 127 - emax]. Elements (`mxfp4_quantize`, Apply.MSMODELSLIM_MXFP4):
    sign(x) times |x| / s in float32 (so only +-0 inputs give +0), in steps of 2^(p - 1) for
    p = clip(floor(log2(|x| / s + 9.6e-7)), 0, emax), rounded half away from zero, clipped to +-6;
    `pack_fp4_to_uint8` puts element 2i in the low nibble. Users: W4A4_MXFP4 and W4A8_MXFP.
    """
    return _msmodelslim_mxfp4(amax, elem, scheme, True)


def msmodelslim_mxfp4_f32(amax, elem, scheme):
    """msmodelslim_mxfp4 on a float32 model (the same steps in float32). Users: msModelSlim on float32
    weights."""
    return _msmodelslim_mxfp4(amax, elem, scheme, False)


def msmodelslim_fp8(amax, elem, scheme):
    """msModelSlim FP8 per channel: s = bf16(max(amax, bf16(1e-12)) / 448), in bf16.

    ir/api/impl/fp_quantization.py `calculate_fp8_qparam`: amax.clamp(min=1e-12) / FP8_E4M3_MAX in
    the weight's dtype (on a float32 model it is v3_float with a 1e-12 amax clamp). Elements
    (`fp8_quantize`): bf16(x / s) + 0, clamped to +-448, then torch's E4M3 cast (round to nearest
    even) when the saver writes them. Users: WFP8AFP8_DYNAMIC (which fp8port reads, never writes).
    """
    with np.errstate(all="ignore"):
        return _bf16(_bf16(np.maximum(_bf16(amax), _bf16(F32(1e-12)))) / F32(elem.max))


def bf16_ceil(amax, elem, scheme):
    """fp8port's exact-bf16 scale: s = the smallest bf16 value >= max(amax / max, eps per step).

    The Ascend loaders hold weight_scale in bf16 (vLLM-Ascend `params_dtype`); a bf16 scale loads
    unchanged, and rounding up keeps every |x / s| <= max, so nothing clips. Used with plain float32
    division (Apply.DIVIDE). Users: fp8port's W8A16 / W8A8_DYNAMIC before issue 24.
    """
    with np.errstate(all="ignore"):
        s = np.maximum((amax.astype(F32) / F32(elem.max)).astype(F32), _eps_floor(elem))
    b = s.astype(ml_dtypes.bfloat16)
    low = b.astype(F32) < s
    b = np.where(low, np.nextafter(b, np.array(np.inf, ml_dtypes.bfloat16)), b)
    return b.astype(F32)


class ScaleRule(NamedEnum):
    """How a block's scale is chosen. Each member's __doc__ is its rule function's docstring."""

    __label__ = "scale rule"
    __aliases__ = {
        "ue8m0": ("deepseek", "deepgemm", "bitwise", "ceil_to_ue8m0"),
        "log2_ceil": ("log2", "log2_f32", "float_log2"),
        "v3_float": ("v3", "float", "amax_448"),
        "floor": ("ocp",),
        "mse_pow2": ("mse",),
        "ct_mx": ("compressed_tensors_mx", "llmcompressor_mx"),
        "ct_nvfp4": ("compressed_tensors_nvfp4", "llmcompressor_nvfp4"),
        "msmodelslim_int": ("modelslim_int",),
        "msmodelslim_mx": ("modelslim_mx",),
        "msmodelslim_mxfp4": ("modelslim_mxfp4",),
        "bf16_ceil": ("bf16_up",),
    }

    UE8M0 = "ue8m0"
    LOG2_CEIL = "log2_ceil"
    V3_FLOAT = "v3_float"
    FLOOR = "floor"
    RCEIL = "rceil"
    CEIL = "ceil"
    EVEN = "even"
    NVFP4 = "nvfp4"
    MSE_POW2 = "mse_pow2"
    CT_MX = "ct_mx"
    CT_NVFP4 = "ct_nvfp4"
    # msModelSlim (Ascend): bf16 arithmetic as on a bf16 model, and its float32 twins
    MSMODELSLIM_INT = "msmodelslim_int"
    MSMODELSLIM_INT_F32 = "msmodelslim_int_f32"
    MSMODELSLIM_MX = "msmodelslim_mx"
    MSMODELSLIM_MX_F32 = "msmodelslim_mx_f32"
    MSMODELSLIM_MXFP4 = "msmodelslim_mxfp4"
    MSMODELSLIM_MXFP4_F32 = "msmodelslim_mxfp4_f32"
    MSMODELSLIM_FP8 = "msmodelslim_fp8"
    BF16_CEIL = "bf16_ceil"

    @property
    def power_of_two(self) -> bool:
        return self not in (
            ScaleRule.V3_FLOAT,
            ScaleRule.NVFP4,
            ScaleRule.CT_NVFP4,
            ScaleRule.MSMODELSLIM_INT,
            ScaleRule.MSMODELSLIM_INT_F32,
            ScaleRule.MSMODELSLIM_FP8,
            ScaleRule.BF16_CEIL,
        )

    @property
    def ascend(self) -> bool:
        """msModelSlim's rules and fp8port's exact-bf16 variant: tried by identify only against presets of
        that family, where they belong (elsewhere a float32-log2 twin explains unrelated edge cases)."""
        return self.value.startswith("msmodelslim") or self is ScaleRule.BF16_CEIL

    @property
    def fn(self):
        return _FUNCS.get(self)


def nvfp4_doc():
    """NVFP4 two-level: per-tensor p = fp32(amax_tensor / (448 * 6)); per 16 elements
    s_blk = e4m3(clamp(fp32(amax16 / 6) / p, 2^-6, 448)) (RNE); elements
    e2m1(clamp(x * fp32(fp32(1/p) / s_blk), -6, 6)); dequant code * fp32(p * s_blk).
    Users: NVIDIA NVFP4 (Blackwell), torchao `nvfp4_quantize` (formulas from 0.18.0). An all-zero
    tensor (p = 0) uses p = 1 instead of dividing by zero (torchao would give NaN)."""


def ct_nvfp4_doc():
    """compressed-tensors NVFP4 (llm-compressor NVFP4A16): global scale g = bf16(bf16(1/amax_t) * 2688)
    (a divisor, stored as `weight_global_scale`), block scale s = e4m3(fp32(g * bf16(amax16 / 6))), an
    all-zero block gets 0.125; elements e2m1(clamp(x / fp32(s / g), -6, 6)); dequant code * fp32(s / g).
    Users: compressed-tensors `generate_gparam` / `calculate_qparams`, hence llm-compressor NVFP4 and
    NVFP4A16 (preset ct-nvfp4). What differs from torchao / ModelOpt: quant/nvfp4.py."""


def mse_doc():
    """MSE-optimal power of two: per block, try E in {e_c - 2, e_c - 1, e_c} where e_c is the
    RCEIL exponent, encode the block under each (elements saturate), keep the one with the least
    squared error of the dequantized values (ties keep the larger scale). None of the anchors
    (DeepSeek, OCP, TE, torchao) does this; benchmarks/bench_quant.py prints its gain."""


_FUNCS = {
    ScaleRule.UE8M0: ue8m0_bitwise,
    ScaleRule.LOG2_CEIL: log2_ceil_f32,
    ScaleRule.V3_FLOAT: v3_float,
    ScaleRule.FLOOR: ocp_floor,
    ScaleRule.RCEIL: rceil,
    ScaleRule.CEIL: ocp_ceil,
    ScaleRule.EVEN: ocp_even,
    ScaleRule.CT_MX: ct_mx,
    ScaleRule.MSMODELSLIM_INT: msmodelslim_int,
    ScaleRule.MSMODELSLIM_INT_F32: msmodelslim_int_f32,
    ScaleRule.MSMODELSLIM_MX: msmodelslim_mx,
    ScaleRule.MSMODELSLIM_MX_F32: msmodelslim_mx_f32,
    ScaleRule.MSMODELSLIM_MXFP4: msmodelslim_mxfp4,
    ScaleRule.MSMODELSLIM_MXFP4_F32: msmodelslim_mxfp4_f32,
    ScaleRule.MSMODELSLIM_FP8: msmodelslim_fp8,
    ScaleRule.BF16_CEIL: bf16_ceil,
}
for _m in ScaleRule:
    _m.__doc__ = (
        _FUNCS.get(_m)
        or {ScaleRule.NVFP4: nvfp4_doc, ScaleRule.MSE_POW2: mse_doc, ScaleRule.CT_NVFP4: ct_nvfp4_doc}[_m]
    ).__doc__
