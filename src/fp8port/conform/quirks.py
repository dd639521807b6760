"""Known implementation quirks, modelled in plain NumPy so `identify` can name them.

A quirk is one implementation's bug, not a rule anyone should follow, so a quirk variant only
explains a deviating case; it never becomes a group's best match (see identify.py).

torchao 0.18 `to_mx` with ScaleCalculationMode FLOOR/CEIL/EVEN (eager path), written from its
described behaviour (research notes mx-landscape.md §5 "torchao", §9 D3 and D4b), not its code:

* scale exponent from amax's float32 bits: exponent - 127 - emax (FLOOR), +1 when the mantissa
  is non-zero (CEIL), or after rounding amax half-up to the element's mantissa width (EVEN);
  clamped to [-127, 128]; a NaN amax gives 128 (byte 0xFF).
* D3: the NaN test misses Inf, so an Inf amax keeps its exponent bits: 255 - 127 - emax
  (0xF7 for E4M3, 2^120), and the Inf element is clipped to +-max.
* NaN blocks: the scale 2^128 is Inf in float32, so every finite element divides to +-0;
  the NaN element stays NaN.
* D4b: elements are divided by max(2^e, 2^-126), so under scale byte 0x00 (2^-127) every
  code is half the value the byte says.
* then elements are clamped to +-max and cast with round-to-nearest-even.

torchao 0.18 `to_mx` with ScaleCalculationMode RCEIL (eager path), from mx-landscape.md §5, §9 D3,
D4a and D4b, checked byte for byte against to_mx on the kit's inputs:

* scale exponent ceil(log2(amax / max)) with a float32 log2 (D4a: amax/max just above 2^k gives k,
  where the float32 bits give k+1), clamped to [-127, 127] (a zero block gives 0x00); NaN amax
  gives 255 (0xFF), Inf amax 254 (0xFE, 2^127) (D3).
* elements are multiplied by the reciprocal 2^(127 - byte), which is 1.0 when the byte is 0 (D4b):
  a block under scale 0x00 is not scaled at all, so its elements (below 448 * 2^-127) flush to +-0.
* NaN blocks (measured; the notes give only elem0 0x7f): the reciprocal is NaN, so every element
  of the block becomes +NaN (0x7f), finite ones and -NaN included.
* then elements are clamped to +-max (an Inf element to +-max) and cast with round-to-nearest-even.
"""

from __future__ import annotations

import numpy as np

from ..quant import ScaleRule
from ..quant.scheme import Scheme
from .targets import Expected, ScaleKind, element_output

TORCHAO_018 = "torchao 0.18"
TORCHAO_RULES = (ScaleRule.FLOOR, ScaleRule.CEIL, ScaleRule.EVEN, ScaleRule.RCEIL)
# what each mode computes, in the rule family identify scores (RCEIL 0.18 is a float32 log2, D4a)
TORCHAO_AS_RULE = {ScaleRule.RCEIL: ScaleRule.LOG2_CEIL}
# checked against to_mx on the kit's inputs; FP4/FP6 NaN elements take torchao's own path (D7), not modelled
TORCHAO_ELEMENTS = frozenset({"float8_e4m3fn", "float8_e5m2"})
_BLOCK = 32


def torchao_018(x: np.ndarray, scheme: Scheme) -> tuple[Expected, list[str]]:
    """Codes and E8M0 scale bytes of `x` (blocks of 32 along the last axis, zero-padded), and the
    quirks that fired in it, in words."""
    spec = scheme.element
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[-1]
    b, amax = _blocks(x)
    if scheme.scale_rule is ScaleRule.RCEIL:
        return _rceil(x, b, amax, scheme)

    bits = amax.view(np.uint32)
    if scheme.scale_rule is ScaleRule.EVEN:
        bits = (bits + np.uint32(1 << (22 - spec.mbits))) & np.uint32(0xFF800000)
    biased = ((bits >> 23) & 0xFF).astype(np.int64)
    inf_bits = (biased == 255) & ~np.isnan(amax)  # Inf, or EVEN's rounding carried into exponent 255
    exp = biased - 127 - spec.emax
    if scheme.scale_rule is ScaleRule.CEIL:
        exp += (bits & 0x7FFFFF) != 0
    exp = np.where(np.isnan(amax), 128, np.clip(exp, -127, 128))  # isnan only: Inf keeps its bits (D3)

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        scale = np.ldexp(np.float32(1), exp).astype(np.float32)  # 2^128 overflows to Inf
        y = b / np.maximum(scale, np.float32(2.0**-126))[..., None]  # D4b
    y = np.clip(y, -spec.max, spec.max).reshape(*x.shape[:-1], -1)[..., :n]  # NaN passes through
    codes = element_output(y.astype(np.float32), spec, scheme.rules).codes  # RNE; clamped, so no overflow
    return Expected(codes, (exp + 127).astype(np.uint8), ScaleKind.E8M0), _fired(b, amax, inf_bits, exp, spec)


def _blocks(x):
    pad = -x.shape[-1] % _BLOCK  # zero padding never raises amax
    b = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)]).reshape(*x.shape[:-1], -1, _BLOCK)
    return b, np.max(np.abs(b), axis=-1)  # NaN propagates, like torch.amax


def _rceil(x, b, amax, scheme) -> tuple[Expected, list[str]]:
    spec = scheme.element
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        r = (amax / np.float32(spec.max)).astype(np.float32)
        e = np.ceil(np.log2(r))  # float32 log2 (D4a); log2(0) = -inf, clamped below
    e = np.clip(np.nan_to_num(e, nan=0.0), -127, 127).astype(np.int64)
    biased = np.where(np.isnan(amax), 255, np.where(np.isposinf(amax), 254, e + 127))
    with np.errstate(over="ignore", invalid="ignore"):
        recip = np.where(biased == 0, np.float32(1), np.ldexp(np.float32(1), 127 - biased)).astype(np.float32)
        recip = np.where(biased == 255, np.float32(np.nan), recip)  # D4b: 1.0 under 0x00; NaN blocks all NaN
        y = b * recip[..., None]
    y = np.where(np.isnan(y), np.float32(np.nan), y)  # NaN blocks: +NaN, even from -NaN
    y = np.clip(y, -spec.max, spec.max).reshape(*x.shape[:-1], -1)[..., : x.shape[-1]]
    codes = element_output(y.astype(np.float32), spec, scheme.rules).codes
    return Expected(codes, biased.astype(np.uint8), ScaleKind.E8M0), _fired_rceil(b, amax, r, biased, spec)


def _fired_rceil(b, amax, r, biased, spec) -> list[str]:
    out, who = [], f"{TORCHAO_018} RCEIL"
    if np.any(np.isposinf(amax)):
        out.append(f"Inf block: scale 0xfe (2^127) instead of NaN, Inf clipped to +-{spec.max:g} ({who}, D3)")
    if np.any(np.isnan(amax)):
        out.append(f"NaN block: every element +NaN, finite and -NaN ones included ({who})")
    finite = np.isfinite(r) & (r > 0)
    bits = np.where(finite, r, np.float32(1)).view(np.uint32)
    exact = ((bits >> 23) & 0xFF).astype(np.int64) - 127 + ((bits & 0x7FFFFF) != 0)  # ceil from the bits
    if np.any(finite & (biased > 0) & (biased - 127 < exact)):
        out.append(
            f"float32 log2 rounds amax/max just above 2^k to k: scale a binade low, the top "
            f"element clipped to +-{spec.max:g} ({who}, D4a)"
        )
    if np.any((biased == 0) & np.any(b != 0, axis=-1)):
        out.append(f"scale 0x00 applied with reciprocal 1.0 (not 2^127): elements flushed to +-0 ({who}, D4b)")
    return out or [f"{who} quirks"]


def _fired(b, amax, inf_bits, exp, spec) -> list[str]:
    out = []
    what = f"scale from Inf's exponent bits (0x{255 - spec.emax:02x}), elements clipped to +-{spec.max:g}"
    if np.any(np.isposinf(amax)):
        out.append(f"Inf block: {what} ({TORCHAO_018}, D3)")
    if np.any(inf_bits & np.isfinite(amax)):  # EVEN's half-up rounding carried amax into exponent 255
        out.append(f"amax near the float32 max rounded (EVEN) to Inf's bits: {what} ({TORCHAO_018}, D3)")
    if np.any(np.isnan(amax)):
        out.append(f"NaN block: finite elements 0 (scale 2^128 = Inf in float32), NaN stays NaN ({TORCHAO_018})")
    if np.any((exp == -127) & np.any(b != 0, axis=-1)):
        out.append(f"scale 0x00 applied as 2^-126: codes halved ({TORCHAO_018}, D4b)")
    return out or [f"{TORCHAO_018} quirks"]  # a difference the model has but no quirk above names
