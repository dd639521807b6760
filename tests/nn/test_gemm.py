"""scaled_matmul: fast == reference == dequantize-then-matmul, within float32 reassociation."""

import numpy as np
import pytest
import torch

import fp8port
from fp8port.errors import ShapeError
from fp8port.nn import reference_scaled_matmul, scaled_matmul
from fp8port.quant import get_preset

SHAPES = [(4, 256, 256), (3, 576, 192), (1, 576, 1536), (17, 130, 200), (2, 7168, 576)]


def _operands(preset, m, k, n, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, k)) * np.exp(rng.standard_normal((m, 1)))).astype(np.float32)
    w = (rng.standard_normal((n, k)) * np.exp(2 * rng.standard_normal((n, 1)))).astype(np.float32)
    return fp8port.quantize(x, preset, role="activation"), fp8port.quantize(w, preset, role="weight")


def _tol(a, b, k):
    # float32 sums of k products in another order: a few ulps of the sum of |terms|
    return np.abs(a - b).max() <= 4 * k * np.finfo(np.float32).eps * max(np.abs(b).max(), 1e-30)


@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("preset", ["deepseek-v3.1", "deepseek-v3", "mxfp8", "mxfp4"])
def test_fast_reference_and_dequantized_matmul_agree(preset, m, k, n):
    a, b = _operands(preset, m, k, n)
    ref = reference_scaled_matmul(a, b)
    fast = scaled_matmul(a, b)
    deq = fp8port.dequantize(a, "float64") @ fp8port.dequantize(b, "float64").T  # exact products, f64 sums
    assert fast.shape == ref.shape == (m, n)
    assert _tol(fast, ref, k) and _tol(fast, deq, k) and _tol(ref, deq, k)


def test_torch_operands_and_bf16_output():
    a, b = _operands("deepseek-v3.1", 8, 576, 192)
    at = fp8port.quantize(torch.from_numpy(fp8port.dequantize(a, "float32")), "deepseek-v3.1", role="activation")
    out = scaled_matmul(at, b, out_dtype="bfloat16")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16
    assert torch.equal(out, torch.from_numpy(scaled_matmul(a, b)).bfloat16())


def test_partial_blocks_match_padding_by_hand():
    # K = 200: the last 128-block holds 72 real columns; zero padding changes nothing
    from dataclasses import replace

    a, b = _operands("deepseek-v3.1", 5, 200, 130)
    pa = replace(a, codes=np.pad(a.codes, ((0, 0), (0, 56))), shape=(5, 256))  # same scale grids
    pb = replace(b, codes=np.pad(b.codes, ((0, 126), (0, 56))), shape=(256, 256))
    got, want = reference_scaled_matmul(pa, pb)[:, :130], reference_scaled_matmul(a, b)
    assert _tol(got, want, 256)  # equal up to how BLAS blocks the two sums


def test_mismatches_are_clear():
    a, b = _operands("deepseek-v3.1", 2, 256, 128)
    _, c = _operands("deepseek-v3.1", 2, 384, 128)
    with pytest.raises(ShapeError, match="K differs"):
        scaled_matmul(a, c)
    with pytest.raises(ShapeError, match="must be 2-D"):
        scaled_matmul(a, fp8port.quantize(np.ones((2, 4, 256), np.float32), "mxfp8"))
    a3 = fp8port.quantize(np.ones((2, 4, 256), np.float32), get_preset("deepseek-v3.1").weight)
    with pytest.raises(ShapeError, match="rank 3"):
        reference_scaled_matmul(a3, b)


@pytest.mark.parametrize(
    "pa,pb", [("deepseek-v3.1", "mxfp8"), ("hif8", "hif8"), ("mxfp8", "deepseek-v3.1"), ("nvfp4", "deepseek-v3")]
)
def test_mixed_block_layouts(pa, pb):
    """Any pair of layouts: the K block is the finest of the two (per-tensor and per-row scales too)."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((6, 576)).astype(np.float32), rng.standard_normal((192, 576)).astype(np.float32)
    a = fp8port.quantize(x, pa, role="activation")
    b = fp8port.quantize(w, pb, role="weight")
    ref, fast = reference_scaled_matmul(a, b), scaled_matmul(a, b)
    deq = fp8port.dequantize(a, "float64") @ fp8port.dequantize(b, "float64").T
    assert _tol(ref, deq, 576) and _tol(fast, deq, 576)
