"""Triton quantize / dequantize, bit for bit against the NumPy reference.

Without CUDA the kernels run under TRITON_INTERPRET=1 on CPU tensors (set in _env before triton
is imported): indexing, partial-block masking, the scale rules and the integer E4M3 encode are
all exercised; only the compiled code generation is not.
"""

from ._env import DEVICE  # noqa: I001  (sets TRITON_INTERPRET before triton is imported)

import ml_dtypes
import numpy as np
import pytest
import torch

pytest.importorskip("triton", reason="triton not installed: pip install triton==3.9.0")

import fp8port  # noqa: E402
from fp8port.errors import NonFiniteError, UnsupportedInputError  # noqa: E402
from fp8port.kernels import dispatch  # noqa: E402
from fp8port.quant.presets import get_preset  # noqa: E402

CASES = [("deepseek-v3.1", "activation"), ("deepseek-v3.1", "weight"), ("mxfp8", "weight")]


def _data(shape, seed=0):
    """Wide magnitudes plus the cases the integer encode must get right: zero blocks, ties,
    mantissa carries, E4M3 subnormals and values that flush to zero."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * np.exp2(rng.integers(-12, 12, shape))).astype(np.float32)
    flat = x.reshape(-1)
    n = flat.size
    special = np.array(
        [
            448,
            -448,
            1.0625,
            272,
            1.9375,
            7.75,
            -31,
            3.875,
            0.0166015625,
            0.0029296875,
            0.000986328125,
            2.0**-10,
            -(2.0**-11),
            1e-30,
            -0.0,
            0.0,
            465,
            449.0,
        ],
        np.float32,
    )
    idx = rng.choice(n, size=min(n, 400), replace=False)
    flat[idx] = rng.choice(special, size=idx.size) * np.exp2(rng.integers(-3, 4, idx.size)).astype(np.float32)
    if x.ndim >= 2 and x.shape[-2] > 3:
        x[..., 2, :] = 0.0  # whole zero rows: zero 1xB blocks (the amax clamp / lowest exponent)
        x[..., 3, :] *= np.float32(2.0**-120)  # tiny blocks: FLOOR scales near 2^-127
    if x.ndim >= 2 and x.shape[-2] > 4:
        x[..., 4, :] *= np.float32(2.0**-140)  # float32 subnormals: a 2^-127 scale, y = x * 2^127
    return x


def _bits(t):
    a = t.detach().cpu()
    if a.dtype == torch.bfloat16:
        return a.view(torch.int16).numpy().view(np.uint16).astype(np.uint32)
    if a.dtype in (torch.float8_e8m0fnu, torch.uint8):
        return a.view(torch.uint8).numpy().astype(np.uint32)
    return a.numpy().view(np.uint32)


def _same_values(got, want):
    """Bitwise equal, except that any NaN matches any NaN (payloads differ between paths)."""
    g = got.detach().cpu().float().numpy() if isinstance(got, torch.Tensor) else np.asarray(got, np.float32)
    w = np.asarray(want, np.float32)
    gn, wn = np.isnan(g), np.isnan(w)
    assert np.array_equal(gn, wn)
    assert np.array_equal(g[~gn].view(np.uint32), w[~wn].view(np.uint32))


def _check(x, preset, role, nonfinite="error"):
    ref = fp8port.quantize(x, preset, role=role, backend="reference", nonfinite=nonfinite)
    q = dispatch.quantize(torch.from_numpy(x).to(DEVICE), preset, role=role, nonfinite=nonfinite)
    assert q.codes.dtype == torch.uint8 and q.codes.shape == x.shape and q.grid == ref.grid
    assert np.array_equal(q.codes.cpu().numpy(), ref.codes), "codes differ"
    assert np.array_equal(_bits(q.scale_fp32), ref.scale_fp32.view(np.uint32)), "scales differ"
    assert np.array_equal(
        _bits(q.scale),
        np.asarray(ref.scale).view(np.uint8 if ref.scale.dtype.itemsize == 1 else np.uint32).astype(np.uint32),
    ), "stored scales differ"
    return q, ref


@pytest.mark.parametrize("preset,role", CASES)
@pytest.mark.parametrize("shape", [(130, 200), (5, 64), (2, 70, 33), (1, 129)])
def test_quantize_bit_exact(preset, role, shape):
    _check(_data(shape, seed=sum(shape)), preset, role)


@pytest.mark.parametrize("preset,role", CASES)
def test_dequantize_bit_exact(preset, role):
    x = _data((130, 200), seed=3)
    q, ref = _check(x, preset, role)
    for dtype in ("float32", "bfloat16", "float16"):
        want = fp8port.dequantize(ref, dtype, backend="reference")
        got = dispatch.dequantize(q, dtype)
        assert got.device.type == DEVICE and str(got.dtype) == f"torch.{dtype}"
        if dtype == "bfloat16":
            assert np.array_equal(_bits(got), np.asarray(want).view(np.uint16).astype(np.uint32))
        else:
            _same_values(got.float(), np.asarray(want, np.float32))


def test_deepseek_weight_partial_tiles_wkv_a():
    """576 x 7168 (kv_a_proj): a 5 x 56 scale grid whose last row of tiles holds 64 rows. The
    interpreter takes rows 384..575 (a full and the partial tile row) x the first 1000 columns
    (7 full and one partial tile column)."""
    x = _data((576, 7168), seed=7)
    if DEVICE == "cpu":
        x = x[384:, :1000].copy()
    q, _ = _check(x, "deepseek-v3.1", "weight")
    assert q.grid == ((2, 8) if DEVICE == "cpu" else (5, 56))


def test_bf16_input_matches_reference():
    x = torch.from_numpy(_data((33, 300), seed=11)).bfloat16()
    for preset, role in CASES:
        ref = fp8port.quantize(x, preset, role=role, backend="reference")
        q = dispatch.quantize(x.to(DEVICE), preset, role=role)
        assert np.array_equal(q.codes.cpu().numpy(), ref.codes.numpy())
        assert np.array_equal(_bits(q.scale_fp32), _bits(ref.scale_fp32))
        assert q.src_dtype == "bfloat16"


def test_every_e4m3_value_and_midpoint_encodes_like_the_reference():
    """One 1x128 block per row; amax pinned to 448 by the first column so the scale is 1 and y = x:
    every E4M3 value, every midpoint (ties) and the floats next to them."""
    vals = ml_dtypes.finfo(ml_dtypes.float8_e4m3fn)
    codes = np.arange(0x7F, dtype=np.uint8)
    v = codes.view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    mids = ((v[:-1].astype(np.float64) + v[1:]) / 2).astype(np.float32)
    pool = np.concatenate([v, mids, np.nextafter(mids, np.float32(0)), np.nextafter(mids, np.float32(1000))])
    pool = np.concatenate([pool, -pool])
    rows = -(-pool.size // 127)
    x = np.zeros((rows, 128), np.float32)
    x[:, 0] = float(vals.max)
    x[:, 1:].reshape(-1)[: pool.size] = pool
    _check(x, "deepseek-v3.1", "activation")
    _check(x, "mxfp8", "activation")


def test_ue8m0_scale_at_power_of_two_boundaries():
    """amax = 448 * 2^k and its float32 neighbours: ceil(log2) flips exactly there."""
    k = np.arange(-13, 30)
    base = (448.0 * np.exp2(k)).astype(np.float32)
    amax = np.concatenate(
        [
            base,
            np.nextafter(base, np.float32(0)),
            np.nextafter(base, np.float32(np.inf)),
            np.float32([1e-4, 9.99e-5, 1.0001e-4, 3.0e38]),
        ]
    )
    x = np.zeros((amax.size, 128), np.float32)
    x[:, 5] = amax
    x[:, 6] = -amax / 3
    _check(x, "deepseek-v3.1", "activation")


def test_nonfinite_error_and_propagate():
    x = _data((40, 256), seed=5)
    x[1, 7], x[9, 200], x[20, 33] = np.nan, np.inf, -np.inf
    for preset, role in CASES:
        with pytest.raises(NonFiniteError, match=r"index \(1, 7\)"):
            dispatch.quantize(torch.from_numpy(x).to(DEVICE), preset, role=role)
        _check(x, preset, role, nonfinite="propagate")


def test_unsupported_schemes_say_why():
    assert dispatch.unsupported_reason(get_preset("deepseek-v3.1").weight) is None
    assert dispatch.unsupported_reason(get_preset("mxfp8").activation) is None
    assert "scale rule" in dispatch.unsupported_reason(get_preset("deepseek-v3").weight)
    assert "element" in dispatch.unsupported_reason(get_preset("mxfp4").weight)
    with pytest.raises(UnsupportedInputError, match="no Triton kernel"):
        dispatch.quantize(torch.zeros(4, 32, device=DEVICE), "nvfp4")


def test_empty_input():
    q = dispatch.quantize(torch.zeros(0, 256, device=DEVICE), "deepseek-v3.1", role="activation")
    assert q.codes.shape == (0, 256) and q.grid == (0, 2)
    assert dispatch.dequantize(q).shape == (0, 256)


@pytest.mark.gpu
def test_gpu_large_shapes_bit_exact():
    for shape, preset, role in (
        ((4096, 7168), "deepseek-v3.1", "activation"),
        ((7168, 2048), "deepseek-v3.1", "weight"),
        ((4096, 7168), "mxfp8", "weight"),
    ):
        _check(_data(shape, seed=1), preset, role)
