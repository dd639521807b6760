"""With a library's profile, encode gives that library's cast bit for bit.

Inputs: all 65,536 bfloat16 values, and (for the fast path that users run) more than
ten million float32 values: random bit patterns plus every midpoint between adjacent
codes and its +-1-ulp neighbours. The reference is checked on the bf16 set, the
boundaries and a one-million sample (the full set runs under -m slow).
"""

from __future__ import annotations

import en_dtypes
import ml_dtypes
import numpy as np
import pytest
import torch

import fp8port
from fp8port.formats import FORMATS

from .vectors import adversarial_f32, all_bf16

N_FAST = 10_000_000
N_REF = 1_000_000


def _lib_cast(lib: str, name: str, x: np.ndarray) -> np.ndarray:
    if lib == "torch":
        if x.dtype == ml_dtypes.bfloat16:
            t = torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
        else:
            t = torch.from_numpy(x)
        return t.to(getattr(torch, name)).view(torch.uint8).numpy()
    mod = ml_dtypes if lib == "ml_dtypes" else en_dtypes
    if lib == "en_dtypes" and x.dtype == ml_dtypes.bfloat16:
        x = x.astype(np.float32)  # en_dtypes has no bf16 cast; bf16 -> f32 is exact
    return x.astype(getattr(mod, name)).view(np.uint8)


def _pairs():
    for spec in FORMATS.values():
        if spec.ml_dtypes:
            yield "ml_dtypes", spec.name, spec.ml_dtypes
        if spec.en_dtypes:
            yield "en_dtypes", spec.name, spec.en_dtypes
        if spec.torch and spec.name not in ("float4_e2m1fn", "int8"):  # no torch casts for these
            yield "torch", spec.name, spec.torch


PAIRS = list(_pairs())
IDS = [f"{lib}-{fmt}" for lib, fmt, _ in PAIRS]


def _assert_same(x, got, want, what):
    bad = np.flatnonzero(got.ravel() != want.ravel())
    if bad.size:
        xs = x.ravel().astype(np.float64)
        show = ", ".join(f"{xs[i]!r}: ours 0x{got.ravel()[i]:02x} lib 0x{want.ravel()[i]:02x}" for i in bad[:8])
        pytest.fail(f"{what}: {bad.size} of {x.size} differ; first: {show}")


@pytest.fixture(scope="module")
def big_inputs():
    return {name: adversarial_f32(spec, N_FAST) for name, spec in FORMATS.items()}


@pytest.mark.parametrize("lib,fmt,libname", PAIRS, ids=IDS)
def test_all_bf16(lib, fmt, libname):
    x = all_bf16()
    want = _lib_cast(lib, libname, x)
    for backend in ("fast", "reference"):
        _assert_same(x, fp8port.encode(x, fmt, profile=lib, backend=backend), want, f"{backend} bf16")


@pytest.mark.parametrize("lib,fmt,libname", PAIRS, ids=IDS)
def test_ten_million_float32_fast(lib, fmt, libname, big_inputs):
    x = big_inputs[fmt]
    assert x.size >= 10_000_000
    _assert_same(x, fp8port.encode(x, fmt, profile=lib), _lib_cast(lib, libname, x), "fast f32")


@pytest.mark.parametrize("lib,fmt,libname", PAIRS, ids=IDS)
def test_float32_reference(lib, fmt, libname, big_inputs):
    x = big_inputs[fmt][: -(N_FAST - N_REF)]  # boundaries + the first million random patterns
    got = fp8port.encode(x, fmt, profile=lib, backend="reference")
    _assert_same(x, got, _lib_cast(lib, libname, x), "reference f32")


@pytest.mark.slow
@pytest.mark.parametrize("lib,fmt,libname", PAIRS, ids=IDS)
def test_float32_reference_full(lib, fmt, libname, big_inputs):
    x = big_inputs[fmt]
    got = fp8port.encode(x, fmt, profile=lib, backend="reference")
    _assert_same(x, got, _lib_cast(lib, libname, x), "reference f32 (all)")


@pytest.mark.parametrize(
    "lib,fmt,libname",
    [p for p in PAIRS if p[0] != "en_dtypes"],
    ids=[i for i, p in zip(IDS, PAIRS) if p[0] != "en_dtypes"],
)
def test_float64_goes_through_float32_like_the_library(lib, fmt, libname):
    # Both libraries cast float64 through float32 (a double rounding); the profile does too.
    x = np.array([1.0625 + 1e-12, 1.5 + 2**-40, 3 * 2**-10 + 1e-20], np.float64)
    x = np.concatenate([x, -x])
    want = _lib_cast(lib, libname, x.astype(np.float32)) if lib == "torch" else _lib_cast(lib, libname, x)
    _assert_same(x, fp8port.encode(x, fmt, profile=lib), want, "float64")


def test_default_profile_is_exact_for_float64():
    # No double rounding: 1.0625 + 1e-12 is above the tie and must round up.
    assert fp8port.encode(np.float64([1.0625 + 1e-12]), "float8_e4m3fn")[0] == 0x39
    assert fp8port.encode(np.float64([1.0625 + 1e-12]), "float8_e4m3fn", profile="ml_dtypes")[0] == 0x38
