"""The fast path equals the reference bit for bit: every format, profile, rounding and
overflow policy, float32 and float64 inputs, including stochastic rounding with a seed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import fp8port
from fp8port import cpu
from fp8port.codec.profiles import PROFILES
from fp8port.errors import NonFiniteError
from fp8port.formats import FORMATS

from .vectors import adversarial_f32

COMBOS = [(f, p) for p in PROFILES for f, s in FORMATS.items() if PROFILES[p].covers(s)]
KERNELS = ("numba", *(t.value for t in cpu.tiers()))  # Numba, then each ISA tier of the C kernels here


@pytest.fixture(params=KERNELS)
def kernel(request):
    with cpu.forced(request.param):
        yield request.param


@pytest.mark.parametrize("fmt,profile", COMBOS, ids=[f"{p}-{f}" for f, p in COMBOS])
@pytest.mark.parametrize("rounding", [None, "rne", "away", "zero", "stochastic"])
def test_fast_equals_reference(fmt, profile, rounding, kernel):
    x = adversarial_f32(FORMATS[fmt], 20_000, seed=hash(fmt) % 1000)
    kw = dict(profile=profile, rounding=rounding, seed=7)
    for arr in (x, x.astype(np.float64) * 1.0000001):  # float64 values between float32s too
        fast = fp8port.encode(arr, fmt, **kw, backend="fast")
        ref = fp8port.encode(arr, fmt, **kw, backend="reference")
        bad = np.flatnonzero(fast != ref)
        assert bad.size == 0, [(float(arr[i]), hex(fast[i]), hex(ref[i])) for i in bad[:5]]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("overflow", ["saturate", "nonfinite"])
def test_overflow_policies_agree(fmt, overflow):
    x = adversarial_f32(FORMATS[fmt], 5_000)
    fast = fp8port.encode(x, fmt, overflow=overflow)
    assert np.array_equal(fast, fp8port.encode(x, fmt, overflow=overflow, backend="reference"))
    if overflow == "saturate":  # nothing non-finite comes out of a saturating cast of finite x
        finite = np.isfinite(x) & ((x > 0) | FORMATS[fmt].has_zero)  # E8M0: 0 and x < 0 are NaN
        assert np.isfinite(fp8port.decode(fast[finite], fmt)).all()


floats = arrays(
    np.float64,
    st.integers(1, 64),
    elements=st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True, width=64),
)


# the kernel fixture routes the whole test, every example alike
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=floats, fmt=st.sampled_from(sorted(FORMATS)), rounding=st.sampled_from(["rne", "away", "zero"]))
def test_property_fast_equals_reference(x, fmt, rounding, kernel):
    fast = fp8port.encode(x, fmt, rounding=rounding)
    ref = fp8port.encode(x, fmt, rounding=rounding, backend="reference")
    assert np.array_equal(fast, ref)


@settings(max_examples=200, deadline=None)
@given(
    x=arrays(np.float32, st.integers(1, 32), elements=st.floats(-1e4, 1e4, width=32)),
    fmt=st.sampled_from(sorted(FORMATS)),
)
def test_property_nearest_is_nearest(x, fmt):
    """RNE picks a code at least as close as any other finite code (within range)."""
    spec = FORMATS[fmt]
    lo = -spec.max_negative if spec.signed else spec.min_subnormal
    x = np.clip(x, lo, spec.max)
    rounding = "away" if fmt == "hifloat8" else "rne"
    got = fp8port.decode(fp8port.encode(x, fmt, rounding=rounding), fmt).astype(np.float64)
    finite = spec.values[np.isfinite(spec.values)]
    best = np.abs(x[:, None].astype(np.float64) - finite[None, :]).min(axis=1)
    assert np.all(np.abs(got - x) <= best)


@settings(max_examples=100, deadline=None)
@given(
    x=arrays(np.float32, st.integers(1, 200), elements=st.floats(-100, 100, width=32)), seed=st.integers(0, 2**32 - 1)
)
def test_stochastic_is_seeded_and_brackets(x, seed):
    a = fp8port.encode(x, "float8_e4m3fn", rounding="stochastic", seed=seed)
    b = fp8port.encode(x, "float8_e4m3fn", rounding="stochastic", seed=seed)
    assert np.array_equal(a, b)
    down = fp8port.decode(fp8port.encode(x, "float8_e4m3fn", rounding="zero"), "float8_e4m3fn")
    got = fp8port.decode(a, "float8_e4m3fn")
    assert np.all(np.abs(got) >= np.abs(down))  # never below the truncated code ...
    assert np.all(np.abs(got - x) < np.abs(down) * 2**-2 + 2**-9)  # ... and at most one step up


def test_stochastic_is_unbiased():
    x = np.full(200_000, 1.03125, np.float32)  # a quarter of the way from 1.0 to 1.125
    got = fp8port.decode(fp8port.encode(x, "float8_e4m3fn", rounding="stochastic", seed=1), "float8_e4m3fn")
    assert abs(got.mean() - 1.03125) < 1e-3


def test_error_policy_names_the_element():
    x = np.array([[1.0, 2.0], [np.inf, 3.0]], np.float32)
    for backend in ("fast", "reference"):
        with pytest.raises(NonFiniteError, match=r"index \(1, 0\).*float8_e4m3fn"):
            fp8port.encode(x, "float8_e4m3fn", overflow="error", backend=backend)
        with pytest.raises(NonFiniteError, match=r"500.0 at index \(1,\)"):
            fp8port.encode(np.array([1.0, 500.0]), "e4m3", overflow="error", backend=backend)


@pytest.mark.parametrize("rounding", [None, "away", "zero"])
def test_every_bf16_pattern_every_format(rounding, kernel):
    """All 65,536 bfloat16 bit patterns, encoded from their own bits (no widening: the C kernels'
    bf16 path), under every format and profile: equal to the reference."""
    import ml_dtypes

    x = np.arange(1 << 16, dtype=np.uint16).view(ml_dtypes.bfloat16)
    wide = x.astype(np.float64)
    for fmt, profile in COMBOS:
        got = fp8port.encode(x, fmt, profile=profile, rounding=rounding, backend="fast")
        want = fp8port.encode(wide, fmt, profile=profile, rounding=rounding, backend="reference")
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, (
            fmt,
            profile,
            [(hex(int(x.view(np.uint16)[i])), hex(got[i]), hex(want[i])) for i in bad[:5]],
        )


def test_decode_equals_reference(kernel):
    from fp8port.codec import reference

    codes = np.arange(256, dtype=np.uint8).repeat(3)
    for fmt, spec in FORMATS.items():
        c = codes[codes < spec.ncodes]
        got = fp8port.decode(c, fmt)
        assert np.array_equal(got.view(np.uint32), reference.decode(c, spec).view(np.uint32)), fmt
