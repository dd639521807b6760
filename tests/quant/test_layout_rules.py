"""Golden cases and properties of the layout-specific rules (compressed-tensors MX / NVFP4, NVFP4
convention changes). Their byte-for-byte agreement with the tools' own code is in tests/peers/."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fp8port import quantize
from fp8port.formats import get_format
from fp8port.quant import nvfp4
from fp8port.quant.presets import get_preset
from fp8port.quant.rules import ScaleRule, ct_mx

E2M1, E4M3, E2M3 = (get_format(f) for f in ("float4_e2m1fn", "float8_e4m3fn", "float6_e2m3fn"))
SCHEME = get_preset("ct-mxfp4").weight


def _byte(amax, elem):
    s = ct_mx(np.array([amax], np.float32), elem, SCHEME)[0]
    return 255 if np.isnan(s) else int(np.frexp(np.float64(s))[1]) + 126


@pytest.mark.parametrize(
    "amax, elem, byte, why",
    [
        (6.0, E2M1, 127, "1.5 * 2^2 keeps its exponent at 1 mantissa bit: 2^(2 - 2)"),
        (7.0, E2M1, 128, "1.75 * 2^2 rounds up to 2^3 (a tie goes up): 2^(3 - 2); OCP FLOOR gives 127 and clips"),
        (6.99, E2M1, 127, "below 1.75 * 2^2 stays"),
        (448.0, E4M3, 128, "E4M3 too rounds at E2M1's 1 bit: 1.75 * 2^8 -> 2^9, scale 2^1 (OCP: 2^0)"),
        (320.0, E4M3, 127, "1.25 * 2^8 stays: 2^(8 - 8)"),
        (7.5, E2M3, 127, "E2M3 rounds at its own 3 bits (0.20): 1.875 * 2^2 stays"),
        (7.75, E2M3, 128, "1.9375 * 2^2 rounds up at 3 bits"),
        (0.0, E2M1, 0, "a zero block: 2^-127 (its log2(0) = -inf is clamped to byte 0)"),
        (2.0**-130, E2M1, 0, "below the range: byte 0"),
        (float("inf"), E2M1, 255, "Inf: byte 255 (NaN)"),
        (3.3e38, E4M3, 255, "1.94 * 2^127 rounds past the top exponent to Inf: byte 255"),
    ],
)
def test_ct_mx_golden(amax, elem, byte, why):
    assert _byte(amax, elem) == byte, why


def test_ct_global_scale_golden():
    # bf16(1 / 2.875) = 0.34765625; * 2688 = 934.5; bf16 -> 936 (spacing 4 in [512, 1024))
    assert nvfp4.ct_global_scale(np.float32(2.875)) == 936.0
    # float32 weights compute in float32: fp32(fp32(1 / 2.875) * 2688)
    assert nvfp4.ct_global_scale(np.float32(2.875), "float32") == np.float32(np.float32(1 / np.float32(2.875)) * 2688)
    assert nvfp4.ct_global_scale(np.float32(0)) == np.float32(1)  # 2688 / tiny overflows bf16 -> 1.0


def test_ct_zero_block_scale_and_unsigned_zero():
    x = np.zeros((1, 32), np.float32)
    x[0, 16:] = np.linspace(-3, 3, 16)
    x[0, 0] = -0.0
    codes, s, g = nvfp4.ct_quantize(x)
    assert s[0, 0] == 0x20  # an all-zero block gets E4M3 0.125 (compressed-tensors' eps), not 0
    assert codes[0, 0] == 0  # exact -0 input -> +0 code (torch.sign(-0) is 0 there)


def test_ct_nvfp4_preset_is_the_module():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((32, 64)) * 0.02).astype(ml_dtypes.bfloat16)
    q = quantize(x, nvfp4.ct_scheme())
    codes, s, g = nvfp4.ct_quantize(x.astype(np.float32))
    assert np.array_equal(q.codes, codes) and np.array_equal(np.asarray(q.scale).view(np.uint8), s)
    assert q.tensor_scale == g
    assert np.array_equal(q.dequantize("float32"), nvfp4.dequantize(codes, nvfp4.ct_multiplier(s, g)))
    assert ScaleRule.parse("compressed-tensors-mx") is ScaleRule.CT_MX


def test_conversion_exact_for_powers_of_two():
    codes = np.arange(1, 0x7F, dtype=np.uint8)  # every positive finite E4M3 scale
    assert nvfp4.conversion_report(codes, np.float32(512)) == {
        "reciprocal_exact": True,
        "roundtrip_exact": True,
        "multiplier_mismatch": 0,
    }
    rep = nvfp4.conversion_report(codes, np.float32(936))
    assert not rep["reciprocal_exact"] and rep["multiplier_mismatch"] > 0


@given(st.floats(1e-3, 1e6, allow_nan=False).map(np.float32), st.integers(-20, 20))
def test_modelopt_and_ct_multipliers_one_rounding_apart(g, e):
    codes = np.arange(1, 0x7F, dtype=np.uint8)
    p = nvfp4.modelopt_from_ct_global(g)
    a = nvfp4.ct_multiplier(codes, g).view(np.int32).astype(np.int64)
    b = nvfp4.modelopt_multiplier(codes, p).view(np.int32).astype(np.int64)
    assert np.abs(a - b).max() <= 1  # at most one float32 ulp
    g2 = np.float32(2.0**e)
    assert nvfp4.conversion_report(codes, g2)["multiplier_mismatch"] == 0
