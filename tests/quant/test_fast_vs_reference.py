"""The fused kernels equal the NumPy reference bit for bit (property tests + adversarial arrays)."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fp8port import cpu
from fp8port.quant import Scheme, dequantize, get_preset, quantize

FAST_SCHEMES = [
    get_preset("deepseek-v3.1").activation,
    get_preset("deepseek-v3.1").weight,
    get_preset("deepseek-v3").activation,
    get_preset("deepseek-v3").weight,
    get_preset("deepseek-v3").activation.with_(apply="reciprocal"),
    get_preset("mxfp8").activation,
    get_preset("mxfp8").activation.with_(scale_rule="rceil"),
    get_preset("mxfp8").activation.with_(scale_rule="even"),
    get_preset("mxfp8").activation.with_(scale_rule="ceil"),
    get_preset("mxfp8").activation.with_(zero_block="unit"),
    get_preset("mxfp4").activation,
    get_preset("mxfp6_e3m2").activation,
    get_preset("mxfp6_e2m3").activation,
    get_preset("hif8").weight,
    get_preset("hif8").activation,
    get_preset("fp4_e1m2").activation,
    get_preset("nvfp4").activation,
    get_preset("mxint8").activation,
    Scheme.build("float8_e5m2", "floor", "1x16", storage="e8m0", profile="ocp-mx", axis=0),
    Scheme.build("float8_e4m3fn", "ue8m0", "4x8", amax_clamp=1e-4, exp_range=(-126, 127)),
]
IDS = [f"{s.name}:{s.scale_rule.value}:{s.block}:{s.apply.value}:{s.zero_block.value}" for s in FAST_SCHEMES]


@pytest.fixture(autouse=True, params=("numba", *(t.value for t in cpu.tiers())))
def kernels(request):
    """Every test runs on each kernel family behind backend='fast': the Numba kernels and the C
    kernels on every ISA tier this CPU has (cpu.forced / FP8PORT_ISA select the lower ones)."""
    with cpu.forced(request.param):
        yield request.param


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and np.array_equal(a.view(np.uint8), b.view(np.uint8))


def check(x, scheme, nonfinite="propagate"):
    from fp8port.quant import fast

    if fast.unsupported_reason(scheme) is not None:  # NVFP4, MXINT8 without the C kernels
        pytest.skip(fast.unsupported_reason(scheme))
    r = quantize(x, scheme, backend="reference", nonfinite=nonfinite)
    f = quantize(x, scheme, backend="fast", nonfinite=nonfinite)
    assert same(r.codes, f.codes)
    assert same(r.scale_fp32, f.scale_fp32)
    assert same(r.scale, f.scale)
    if scheme.element.bits == 8:
        for dt in ("float32", "bfloat16"):
            assert same(dequantize(r, dt, backend="reference"), dequantize(r, dt, backend="fast"))


def bf16_patterns(rng, shape):
    """Any bf16 bit pattern (subnormals, huge values, NaN, Inf), magnitudes grouped per row."""
    bits = rng.integers(0, 1 << 16, size=shape, dtype=np.uint32)
    return (bits << 16).view(np.float32)


@pytest.mark.parametrize("scheme", FAST_SCHEMES, ids=IDS)
def test_adversarial(scheme):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((70, 300)) * np.exp(4 * rng.standard_normal((70, 1)))).astype(np.float32)
    x[0] = 0
    x[1] = bf16_patterns(rng, 300)
    x[2, :] = rng.standard_normal(300) * 2.0**-135
    x[3, ::7] = np.float32(448 * 2.0**-9)
    x[4, 3] = np.nan
    x[5, 9] = np.inf
    x[6, 1] = -np.inf
    x[7] = np.nextafter(np.float32(448.0), np.float32(1e9))
    x[8] = rng.standard_normal(300) * 1e-6
    x[9] = np.float32(3e38)
    check(x, scheme)
    check(x.astype(ml_dtypes.bfloat16), scheme)
    check(x[10:].copy(), scheme, nonfinite="error")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 40),
    cols=st.integers(1, 300),
    which=st.integers(0, len(FAST_SCHEMES) - 1),
    bf16=st.booleans(),
    lead=st.integers(1, 3),
)
def test_property(seed, rows, cols, which, bf16, lead):
    from fp8port.quant import fast

    assume(fast.unsupported_reason(FAST_SCHEMES[which]) is None)
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((lead, rows, cols)) * np.exp(rng.uniform(-30, 30, (lead, rows, 1)))).astype(np.float32)
    mask = rng.random(x.shape) < 0.05
    x[mask] = bf16_patterns(rng, int(mask.sum()))
    check(x.astype(ml_dtypes.bfloat16) if bf16 else x, FAST_SCHEMES[which])


@pytest.mark.parametrize("lowest", [1, 40])  # from 40 up every block stays on the integer path
@pytest.mark.parametrize("scheme", FAST_SCHEMES, ids=IDS)
def test_bf16_blocks_across_every_range(scheme, lowest):
    """The vectorized bf16 kernel (integer exponent subtraction; E4M3 by integer code, other
    elements by table). Each 128-wide block draws bf16 patterns whose exponents lie within
    24 binades below its own amax, with amax exponents over the whole bf16 range, so every
    element range is hit after scaling (normal, subnormal, ties, underflow, FLOOR's overflow,
    bf16 subnormal inputs in tiny blocks); plus every finite bf16 pattern, shuffled."""
    rng = np.random.default_rng(3)
    nblk = 4000
    top = rng.integers(lowest, 255, nblk)[:, None]
    expo = np.clip(top - rng.integers(0, 25, (nblk, 128)), 0, 254)
    expo[:, 0] = top[:, 0]
    bits = (rng.integers(0, 2, (nblk, 128)) << 15) | (expo << 7) | rng.integers(0, 128, (nblk, 128))
    allfin = np.arange(1 << 16)
    allfin = rng.permutation(allfin[(allfin & 0x7F80) != 0x7F80])
    if lowest == 1:
        bits = np.concatenate([bits.ravel(), allfin[: allfin.size // 128 * 128]])
    bits = bits.astype(np.uint16)
    xb = bits.view(ml_dtypes.bfloat16).reshape(-1, 128)
    check(xb, scheme)
