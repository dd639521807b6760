"""msModelSlim's rules as presets: golden cases with the reason for each byte (the proof against its own
code, on every bf16 input and on SmolLM2, is tests/peers/test_msmodelslim.py)."""

import ml_dtypes
import numpy as np
import pytest

from fp8port.quant import dequantize, get_preset, quantize

F32 = np.float32
BF16 = ml_dtypes.bfloat16
PRESETS = [
    "msmodelslim-int8",
    "msmodelslim-int4",
    "msmodelslim-mxfp8",
    "msmodelslim-mxfp4",
    "msmodelslim-fp8",
    "ascend-int8-bf16ceil",
]


def test_mxfp8_scale_uses_bf16_log2():
    # amax 255: log2 = 7.9944 rounds to 8.0 in bf16, so the exponent is 8 - 8 = 0 (byte 0x7f);
    # OCP FLOOR takes floor(7.9944) - 8 = -1 (0x7e). amax 240 (log2 7.907) stays at -1 in both.
    for amax, ours, ocp in ((255.0, 0x7F, 0x7E), (240.0, 0x7E, 0x7E)):
        x = np.zeros((1, 32), F32)
        x[0, 0] = amax
        assert quantize(x, "msmodelslim-mxfp8").scale.view(np.uint8)[0, 0] == ours
        assert quantize(x, "mxfp8").scale.view(np.uint8)[0, 0] == ocp


def test_mx_elements_round_ties_away_and_zeros_follow_its_sign_rules():
    # amax 448: exponent floor(log2 448) - 8 = 0, scale 1. 1.0625 is the tie between 1.0 (0x38) and
    # 1.125 (0x39): msModelSlim's sign * floor(|a| + 0.5) goes away from zero, OCP's RNE to even.
    x = np.array([[448.0, 1.0625, -0.0] + [0.0] * 29], F32)
    q, ocp = quantize(x, "msmodelslim-mxfp8").codes, quantize(x, "mxfp8").codes
    assert (q[0, 1], ocp[0, 1]) == (0x39, 0x38)
    assert (q[0, 2], ocp[0, 2]) == (0x00, 0x80)  # -0 gives +0: torch.sign(-0.0) is +0
    # a tiny negative whose quotient underflows float32 (scale 2^119) is +0 in MXFP8 ...
    x = np.array([[3.0e38, -1e-38] + [0.0] * 30], F32)
    assert quantize(x, "msmodelslim-mxfp8").codes[0, 1] == 0x00
    # ... but -0 in MXFP4, whose sign comes from x itself; there only a -0 input gives +0
    assert quantize(x, "msmodelslim-mxfp4").codes[0, 1] == 0x8
    assert quantize(np.array([[6.0, -0.0] + [0.0] * 30], F32), "msmodelslim-mxfp4").codes[0, 1] == 0x0


def test_mxfp4_scale_moves_up_where_the_block_max_would_round_past_6():
    # amax 7: 7 / 0.875 = 8, exponent log2 8 - 2 = 1, so 7 lands on 3.5 (nothing clips); OCP FLOOR
    # keeps exponent floor(log2 7) - 2 = 0 and clips 7 to 6.
    x = np.zeros((1, 32), F32)
    x[0, 0] = 7.0
    assert quantize(x, "msmodelslim-mxfp4").scale.view(np.uint8)[0, 0] == 127 + 1
    assert quantize(x, "mxfp4").scale.view(np.uint8)[0, 0] == 127 + 0
    zero = quantize(np.zeros((1, 32), F32), "msmodelslim-mxfp4")
    assert zero.scale.view(np.uint8)[0, 0] == 127 - 22  # log2(bf16(9.6e-7)) = -19.99 -> -20 in bf16


def test_int8_scale_rounds_to_nearest_bf16_and_elements_divide_in_bf16():
    # amax 1: 1/127 = 2^-7 * 1.00787..., nearest bf16 2^-7 * (1 + 1/128); fp8port's exact-bf16 variant
    # rounds up to 2^-7 * (1 + 2/128). Scales count in MXINT8 steps: 64 times msModelSlim's weight_scale.
    x = np.linspace(-1, 1, 4096, dtype=F32).astype(BF16).astype(F32)[None, :]
    ms, up = quantize(x, "msmodelslim-int8"), quantize(x, "ascend-int8-bf16ceil")
    assert ms.scale_fp32[0, 0] == F32(2.0**-7 * (1 + 1 / 128) * 64)
    assert up.scale_fp32[0, 0] == F32(2.0**-7 * (1 + 2 / 128) * 64)
    # the codes are round_half_even(bf16(x / s)): bf16 keeps 8 bits, so quotients in [64, 128) snap
    # to halves first and some round differently from the exact quotient
    s = F32(2.0**-7 * (1 + 1 / 128))
    exact = np.rint((x / s).astype(F32)).astype(np.int64)
    twice = np.rint((x / s).astype(F32).astype(BF16).astype(F32)).astype(np.int64)
    got = ms.codes.view(np.int8).astype(np.int64)
    assert np.array_equal(got, twice) and not np.array_equal(got, exact)


def test_int_zero_rows_take_the_eps_floor():
    q = quantize(np.zeros((2, 8), F32), "msmodelslim-int4")
    assert np.all(q.scale_fp32 == F32(2.0**-23 * 4)) and not q.codes.any()  # fp32 eps per int step


@pytest.mark.parametrize("name", PRESETS)
def test_auto_backend_equals_reference(name):
    """Whatever backend `auto` picks must keep the apply modes (bf16 division, the +0 rules)."""
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((16, 96)) * np.exp2(rng.integers(-30, 30, (16, 1)))).astype(F32)
    x[0, :4] = [-0.0, 0.0, 1.0625, -1e-38]
    x[1, 0] = 3.0e38
    x = x.astype(BF16).astype(F32)
    bf16 = (np.arange(0, 1 << 16, dtype=np.uint32) << 16).view(F32)  # every finite bf16 value, in 1x32 rows
    every = np.sort(bf16[np.isfinite(bf16)]).reshape(-1, 32)  # neighbours in a block: ties and carries in each
    for xs in (x, every, every * F32(2.0**-100)):
        a, r = quantize(xs, name), quantize(xs, name, backend="reference")
        assert np.array_equal(a.codes, r.codes) and np.array_equal(a.scale_fp32, r.scale_fp32)
        assert np.array_equal(dequantize(a, "float32"), dequantize(r, "float32"))


def test_presets_describe_their_rules():
    for name in PRESETS:
        w = get_preset(name).weight
        assert w.scale_rule.ascend and w.description
        assert w.apply.value in ("bf16_divide", "msmodelslim_mxfp8", "msmodelslim_mxfp4", "divide")
