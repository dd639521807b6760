"""DeepSeek UE8M0 vectors T1-T14 (tests/golden/ue8m0_vectors.json, a copy of
../shared/research/ue8m0-vectors.json), asserted bit for bit on every backend."""

import hashlib
import math

import numpy as np
import pytest
from conftest import backends_for, bytes_of, f32, load_golden, quantize_on

from fp8port.quant import dequantize, get_preset, quantize

VEC = load_golden("ue8m0_vectors.json")["vectors"]
BLOCKS = [v for v in VEC if "input_f32_hex" in v]
ACT = get_preset("deepseek-v3.1").activation
SCHEMES = {
    "bitwise": ACT.with_(storage="e8m0"),
    "log2_f32": ACT.with_(scale_rule="log2_ceil", exp_range=(-127, 127)),
    "v3": get_preset("deepseek-v3").activation,
}


def _block(v):
    x = np.zeros((1, v["block_len"]), np.float32)
    vals = f32(v["input_f32_hex"])
    x[0, : len(vals)] = vals
    return x, len(vals)


def _ids(v):
    return f"{v['id']}:{v['name']}"


def _cases(kind):
    return [pytest.param(v, be, id=f"{_ids(v)}[{be}]") for v in BLOCKS for be in backends_for(SCHEMES[kind])]


def _q(v, kind, be):
    x, n = _block(v)
    finite = bool(np.isfinite(x).all())
    q = quantize_on(x, SCHEMES[kind], be, role="activation", nonfinite="error" if finite else "propagate")
    return q, n


@pytest.mark.parametrize("v,be", _cases("bitwise"))
def test_bitwise_rule(v, be):
    q, n = _q(v, "bitwise", be)
    assert f"0x{int(bytes_of(q.scale)[0, 0]):02x}" == v["bitwise"]["e8m0"], v["why"]
    assert math.log2(float(q.scale_fp32[0, 0])) == v["bitwise"]["exp"]
    assert [f"0x{c:02x}" for c in q.codes[0, :n]] == v["codes_bitwise"], v["why"]
    assert not q.codes[0, n:].any()


@pytest.mark.parametrize("v,be", _cases("log2_f32"))
def test_float_log2_rule(v, be):
    q, n = _q(v, "log2_f32", be)
    exp = v["log2_f32_numpy"]["exp"]
    s = float(q.scale_fp32[0, 0])
    if exp is None:  # NaN / Inf amax: the float path has no finite scale (T14)
        assert not math.isfinite(s)
    else:
        assert s == 2.0**exp, v["why"]
    if "codes_log2_f32" in v:
        assert [f"0x{c:02x}" for c in q.codes[0, :n]] == v["codes_log2_f32"], v["why"]


@pytest.mark.parametrize("v,be", _cases("v3"))
def test_v3_float_rule(v, be):
    q, n = _q(v, "v3", be)
    got = np.asarray(q.scale_fp32, np.float32)[0, 0:1].view(np.uint32)[0]
    assert f"0x{int(got):08x}" == v["s_float_amax_div_448"]
    assert [f"0x{c:02x}" for c in q.codes[0, :n]] == v["codes_v3_float_div"], v["why"]


def test_t6_rules_disagree_as_documented():
    v = next(v for v in BLOCKS if v["id"] == "T6")
    a, _ = _q(v, "bitwise", "reference")
    b, _ = _q(v, "log2_f32", "reference")
    assert float(a.scale_fp32[0, 0]) == 2 * float(b.scale_fp32[0, 0])


def _t8_matrix(m, n):
    i, j = np.meshgrid(np.arange(m), np.arange(n), indexing="ij")
    w = ((((i * 131 + j * 71) % 1009) - 504) / 64 * 2.0 ** ((((i // 128) * 3 + (j // 128)) % 9) - 4)).astype(np.float32)
    w[m - 1, n - 1] = -300.0
    return w


@pytest.mark.parametrize("v", [v for v in VEC if v["id"] == "T8"], ids=lambda v: v["name"])
@pytest.mark.parametrize("be", ["reference", "fast"])
def test_t8_partial_blocks(v, be):
    m, n = v["shape"]
    w = _t8_matrix(m, n)
    scheme = get_preset("deepseek-v3.1").weight.with_(storage="e8m0")
    q = quantize(w, scheme, backend=be)
    assert list(q.grid) == v["scale_grid"]
    assert bytes_of(q.scale).tobytes().hex() == v["expected_scale_e8m0_row_major"]
    assert (
        hashlib.sha256(np.ascontiguousarray(q.codes).tobytes()).hexdigest()
        == v["expected_codes_sha256_row_major_uint8"]
    )
    q3 = quantize(w, "deepseek-v3", backend=be)
    last = np.asarray(q3.scale_fp32)[-1, -1:].view(np.uint32)[0]
    assert f"0x{int(last):08x}" == v["expected_v3_float_scale_hex_last_block"]


@pytest.mark.parametrize("be", ["reference", "fast"])
def test_t10_ue8m0_to_bf16_is_exact(be):
    """Every finite E4M3 code times 2^k dequantizes exactly into bf16 for k in [-124, 119]; k = 120
    overflows for code 0x78 (256 * 2^120 = 2^128)."""
    from fp8port.formats import get_format
    from fp8port.quant import QuantizedTensor, Role
    from fp8port.quant.tensor import Framework

    t10 = next(v for v in VEC if v["id"] == "T10")
    lo, hi = t10["bf16_exact_k_range"]
    spec = get_format("float8_e4m3fn")
    codes = np.array([c for c in range(256) if c not in spec.nan_codes], np.uint8)
    ks = np.arange(lo, hi + 2)
    scheme = get_preset("deepseek-v3.1").activation
    cgrid = np.tile(np.repeat(codes, 1)[None, :], (len(ks), 1))
    s = np.ldexp(1.0, ks).astype(np.float32)[:, None]
    q = QuantizedTensor(
        codes=cgrid,
        scale=s,
        scale_fp32=s,
        shape=cgrid.shape,
        scheme=scheme.with_(block="row"),
        role=Role.ACTIVATION,
        src_dtype="bfloat16",
        framework=Framework.NUMPY,
    )
    out = dequantize(q, "bfloat16", backend=be).astype(np.float64)
    exact = spec.values[codes][None, :] * np.ldexp(1.0, ks)[:, None]
    inside = ks <= hi
    assert np.array_equal(out[inside], exact[inside])
    edge = out[~inside][0]
    assert np.isinf(edge[list(codes).index(0x78)])
    assert np.isfinite(edge[list(codes).index(0x77)])


@pytest.mark.parametrize("be", ["reference", "fast"])
def test_t11_requantization(be):
    t11 = next(v for v in VEC if v["id"] == "T11")
    ex = t11["explicit_exception"]
    x = np.zeros((1, 128), np.float32)
    x[0, :2] = f32(ex["input_hex"])
    q1 = quantize(x, "deepseek-v3.1", role="activation", backend=be)
    assert math.log2(float(q1.scale_fp32[0, 0])) == ex["pass1"]["exp"]
    assert [f"0x{c:02x}" for c in q1.codes[0, :2]] == ex["pass1"]["codes"]
    import ml_dtypes

    d = dequantize(q1, "bfloat16", backend=be)
    assert d[0, :2].astype(np.float64).tolist() == ex["dequant"]
    q2 = quantize(d, "deepseek-v3.1", role="activation", backend=be)
    assert math.log2(float(q2.scale_fp32[0, 0])) == ex["pass2"]["exp"]
    assert [f"0x{c:02x}" for c in q2.codes[0, :2]] == ex["pass2"]["codes"]
    q3 = quantize(dequantize(q2, "bfloat16", backend=be), "deepseek-v3.1", role="activation", backend=be)
    assert np.array_equal(q3.codes, q2.codes) and np.array_equal(q3.scale_fp32, q2.scale_fp32)
    assert d.dtype == ml_dtypes.bfloat16


def test_t11_rule_on_random_blocks():
    """Pass 2 equals pass 1 unless the largest |code| is 224; then the exponent drops by one and every
    code value doubles. Dequantized values never change, and pass 3 equals pass 2."""
    from fp8port.formats import get_format

    spec = get_format("float8_e4m3fn")
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((3000, 128)) * 10.0 ** rng.uniform(-6, 4, (3000, 1))).astype(np.float32)
    q1 = quantize(x, "deepseek-v3.1", role="activation")
    d1 = dequantize(q1, "bfloat16")
    q2 = quantize(d1, "deepseek-v3.1", role="activation")
    d2 = dequantize(q2, "bfloat16")
    q3 = quantize(d2, "deepseek-v3.1", role="activation")
    assert np.array_equal(d1.view(np.uint16), d2.view(np.uint16))
    assert np.array_equal(q3.codes, q2.codes)
    same = (q1.codes == q2.codes).all(axis=1) & (q1.scale_fp32[:, 0] == q2.scale_fp32[:, 0])
    # blocks whose scale is the clamp floor 2^-22 are fixed points whatever their codes
    top224 = (np.abs(spec.values[q1.codes]).max(axis=1) == 224) & (q1.scale_fp32[:, 0] > 2.0**-22)
    assert np.array_equal(~same, top224) and top224.any() and same.any()
    v1, v2 = spec.values[q1.codes[~same]], spec.values[q2.codes[~same]]
    assert np.array_equal(v2, 2 * v1)
    assert np.array_equal(q2.scale_fp32[~same, 0] * 2, q1.scale_fp32[~same, 0])


def test_t13_floor_overflow_is_clamped():
    t13 = next(v for v in VEC if v["id"] == "T13" and "cases" in v)
    for c in t13["cases"]:
        x = np.zeros((1, 32), np.float32)
        x[0, 0] = c["amax"]
        for be in ("reference", "fast"):
            q = quantize(x, "mxfp8", backend=be)
            assert f"0x{int(q.codes[0, 0]):02x}" == c["clamped"]
            assert bytes_of(q.scale)[0, 0] == 127 + c["X_exp"]
