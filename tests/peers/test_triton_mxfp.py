"""The `triton-mxfp4` preset against triton_kernels' own MXFP4 quantizer (tests/peers/triton_mxfp.py,
source commit cited there): codes and scale bytes equal on finite bf16 and float32 weights. It is what
transformers' gpt-oss integration and vLLM quantize BF16 experts with (OpenAI's checkpoint rule is
unpublished); its scales round UP (never clip) and its elements tie away from zero, unlike OCP FLOOR + RNE."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fp8port import quantize

torch = pytest.importorskip("torch")
from tests.peers.triton_mxfp import downcast_mxfp4  # noqa: E402


def _theirs(x: np.ndarray):
    t = (
        torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
        if x.dtype == ml_dtypes.bfloat16
        else torch.from_numpy(x)
    )
    codes, scales = downcast_mxfp4(t)
    return codes.numpy(), scales.numpy()


def _check(x):
    codes, scales = _theirs(x)
    q = quantize(x, "triton-mxfp4")
    assert np.array_equal(q.codes, codes) and np.array_equal(np.asarray(q.scale).view(np.uint8), scales)
    return codes, scales


def test_golden_rows():
    """Ties 0.25 k (scale 2^0: 0.25 -> 0.5, 1.25 -> 1.5, 2.5 -> 3, 5 -> 6: away from zero, where RNE
    and OCP FLOOR give 0, 1, 2, 4), an amax of exactly 6 * 2^k (scale 2^k, not clipped), zeros, float32
    subnormals, small negatives (-0, code 8)."""
    x = np.zeros((5, 32), np.float32)
    x[0] = np.arange(32) * 0.25 - 1.75  # amax 6: scale byte 127
    x[1, 0] = 6 * 2.0**-3
    x[2] = 0
    x[3, :2] = (3 * 2.0**-133, -(2.0**-149))
    x[4, :3] = (6.0, -0.1, -0.0)
    codes, scales = _check(x)
    assert scales.tolist() == [[127], [124], [0], [1], [127]]
    tie = dict(zip((x[0] + 0).tolist(), codes[0].tolist()))
    assert [tie[v] for v in (0.25, 1.25, 2.5, -0.25, -1.25)] == [1, 3, 5, 9, 11]  # 0.5 1.5 3 -0.5 -1.5
    assert codes[4, :3].tolist() == [7, 8, 8]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), spread=st.floats(0, 80), bf16=st.booleans())
def test_random_weights_equal_triton_kernels(seed, spread, bf16):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, 128)) * np.exp(rng.uniform(-spread, spread, (8, 4))).repeat(32, 1)
    x = np.clip(x, -3e38, 3e38).astype(np.float32)
    _check(x.astype(ml_dtypes.bfloat16) if bf16 else x)
