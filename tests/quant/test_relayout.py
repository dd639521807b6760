"""quant.relayout: codes kept, scales moved; exact where blocks nest and the storage holds every scale."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fp8port
from fp8port.errors import RelayoutError
from fp8port.quant import get_preset
from fp8port.quant.relayout import blocker, relayout

V3, V31, MXFP8 = (get_preset(p).weight for p in ("deepseek-v3", "deepseek-v3.1", "mxfp8"))


def _values(q):
    return np.asarray(fp8port.dequantize(q, "float32"))


def _weights(rows, cols, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, cols)) * np.exp(2 * rng.standard_normal((rows, 1)))).astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 300),
    cols=st.integers(1, 300),
    seed=st.integers(0, 2**16),
    src=st.sampled_from([V3, V31]),
    block=st.sampled_from(["64x64", "32x128", "128x32", "1x128", "1x32", "128x128"]),
)
def test_nested_blocks_keep_every_value(rows, cols, seed, src, block):
    """128x128 -> any block that divides it, ragged edges included, float or power-of-two scales."""
    q = fp8port.quantize(_weights(rows, cols, seed), src)
    r = relayout(q, src.with_(block=block))
    assert blocker(src, src.with_(block=block), (rows, cols)) is None
    assert np.array_equal(np.asarray(r.codes), np.asarray(q.codes))  # codes kept
    assert r.scale_fp32.shape == src.with_(block=block).block.grid((rows, cols))
    assert np.array_equal(_values(r), _values(q))


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 200), cols=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_ue8m0_to_mxfp8_bytes(rows, cols, seed):
    """DeepSeek UE8M0 128x128 -> MXFP8 1x32: every E8M0 byte is its block's exponent, replicated."""
    q = fp8port.quantize(_weights(rows, cols, seed), V31)
    r = relayout(q, MXFP8)
    assert np.asarray(r.scale).dtype == ml_dtypes.float8_e8m0fnu
    want = (np.asarray(q.scale_fp32).view(np.uint32) >> 23).astype(np.uint8)
    rows_i, cols_i = np.arange(rows) // 128, (np.arange(-(-cols // 32)) * 32) // 128
    assert np.array_equal(np.asarray(r.scale).view(np.uint8), want[rows_i][:, cols_i])
    assert np.array_equal(_values(r), _values(q))


@pytest.mark.parametrize(
    "dst, match",
    [
        (V3.with_(block="96x96"), "do not nest"),
        (V3.with_(block="256x128"), "do not nest"),
        (get_preset("mxfp4").weight, "elements differ"),
    ],
)
def test_what_would_change_a_value_is_refused(dst, match):
    q = fp8port.quantize(_weights(300, 300, 1), V3)
    assert match in blocker(V3, dst, (300, 300))
    with pytest.raises(RelayoutError, match=match):
        relayout(q, dst)


def test_storage_must_hold_every_scale():
    q = fp8port.quantize(_weights(130, 260, 2), V3)  # float amax/448 scales
    assert "not all powers of two" in blocker(V3, MXFP8, q.shape)
    with pytest.raises(RelayoutError, match="not all powers of two"):
        relayout(q, V3.with_(block="1x32", storage="e8m0", scale_rule="ue8m0"))
    with pytest.raises(RelayoutError, match="no bfloat16 value"):
        relayout(q, V3.with_(storage="bfloat16"))
    # the same values in a wider storage are fine: E8M0 bytes -> float32 multipliers
    e8 = fp8port.quantize(_weights(130, 260, 2), V31.with_(storage="e8m0"))
    f32 = relayout(e8, V31)
    assert np.asarray(f32.scale).dtype == np.float32 and np.array_equal(_values(f32), _values(e8))


def test_a_block_larger_than_the_tensor_nests():
    """A whole-axis source block (one scale per row) re-blocks into 1xN along that row."""
    hif8 = get_preset("hif8").weight  # one float32 power-of-two scale per row
    q = fp8port.quantize(_weights(5, 70, 3), hif8)
    r = relayout(q, hif8.with_(block="1x32"))
    assert r.scale_fp32.shape == (5, 3) and np.array_equal(_values(r), _values(q))
