"""Every code decodes and re-encodes to itself; decode agrees with the libraries."""

from __future__ import annotations

import en_dtypes
import ml_dtypes
import numpy as np
import pytest

import fp8port
from fp8port.codec.profiles import PROFILES
from fp8port.formats import FORMATS, Class


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("profile", PROFILES)
def test_every_code_roundtrips(fmt, profile):
    spec = FORMATS[fmt]
    if not PROFILES[profile].covers(spec):
        pytest.skip(f"{profile} does not define {fmt}")
    codes = np.arange(spec.ncodes, dtype=np.uint8)
    values = fp8port.decode(codes, fmt)
    for backend in ("fast", "reference"):
        again = fp8port.encode(values, fmt, profile=profile, backend=backend)
        nan, inf = np.isnan(values), np.isinf(values)
        plain = ~(nan | inf)
        assert np.array_equal(again[plain], codes[plain]), backend
        # NaN classes aside: a NaN code comes back as the profile's NaN, a NaN code of the
        # format. Inf codes come back as themselves, or as +-max under a saturating profile.
        if spec.nan_codes:
            assert set(again[nan].tolist()) <= set(spec.nan_codes)
        saturated = {spec.max_code, spec.min_code}
        assert all(a == c or a in saturated for a, c in zip(again[inf], codes[inf]))


@pytest.mark.parametrize("fmt", FORMATS)
def test_decode_matches_libraries(fmt):
    spec = FORMATS[fmt]
    codes = np.arange(spec.ncodes, dtype=np.uint8)
    ours = fp8port.decode(codes, fmt).astype(np.float64)
    checked = 0
    for mod, name in ((ml_dtypes, spec.ml_dtypes), (en_dtypes, spec.en_dtypes)):
        if name and hasattr(mod, name):
            theirs = codes.view(getattr(mod, name)).astype(np.float64)
            assert np.array_equal(ours, theirs, equal_nan=True), mod.__name__
            checked += 1
    if fmt == "int8":  # no library dtype: two's complement over 64
        assert np.array_equal(ours, codes.view(np.int8) / 64.0)
        checked += 1
    if fmt == "int4":  # ml_dtypes' int4 holds the integer; ours is it over 4
        assert np.array_equal(ours, np.where(codes > 7, codes.astype(np.int64) - 16, codes) / 4.0)
        assert np.array_equal(ours[:8] * 4, np.arange(8).astype(ml_dtypes.int4).astype(np.float64))
        checked += 1
    if fmt == "qint8":  # numpy's own int8: value = code (GGUF Q8_0)
        assert np.array_equal(ours, codes.view(np.int8).astype(np.float64))
        checked += 1
    assert checked


def test_spec_limits_match_libraries():
    for spec in FORMATS.values():
        if spec.ml_dtypes:
            fi = ml_dtypes.finfo(getattr(ml_dtypes, spec.ml_dtypes))
            assert spec.max == float(fi.max), spec.name
            assert spec.min_normal == float(fi.smallest_normal), spec.name
            assert spec.min_subnormal == float(fi.smallest_subnormal), spec.name
    hi = en_dtypes.finfo(en_dtypes.hifloat8)
    assert FORMATS["hifloat8"].max == float(hi.max) == 2.0**15
    assert FORMATS["hifloat8"].min_subnormal == float(hi.smallest_subnormal) == 2.0**-22
    assert FORMATS["hifloat8"].min_normal == float(hi.smallest_normal)


def test_classes_cover_specials():
    e4 = FORMATS["float8_e4m3fn"]
    assert e4.classes[0x7F] is Class.NAN and e4.classes[0x00] is Class.ZERO
    assert e4.classes[0x01] is Class.SUBNORMAL and e4.classes[0x08] is Class.NORMAL
    hif8 = FORMATS["hifloat8"]
    assert hif8.classes[0x6F] is Class.INF and hif8.classes[0x80] is Class.NAN
    assert hif8.inf_codes == (0x6F, 0xEF) and hif8.nan_codes == (0x80,)
    assert FORMATS["float8_e5m2"].inf_codes == (0x7C, 0xFC)
    assert FORMATS["float8_e8m0fnu"].classes[0x00] is Class.NORMAL  # 2^-127, not zero
