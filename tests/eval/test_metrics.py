"""Metrics on hand-worked cases, and the clipping / flush / subnormal fractions on built tensors."""

import math

import numpy as np
import pytest
import torch

from fp8port.eval import metrics
from fp8port.quant import quantize
from fp8port.quant.metrics import ratio_db


def test_sqnr_and_max_error_by_hand():
    # signal 1 + 4 = 5, error (2 - 1)^2 = 1 -> 10 log10 5
    assert metrics.sqnr_db([1.0, 2.0], [1.0, 1.0]) == pytest.approx(10 * math.log10(5), abs=1e-12)
    assert metrics.sqnr_db([1.0, -3.0], [1.0, -3.0]) == math.inf
    assert metrics.sqnr_db([0.0, 0.0], [0.0, 1.0]) == -math.inf
    assert metrics.max_abs_error([1.0, 2.0, -4.0], [1.5, 2.0, -1.0]) == 3.0


def test_sqnr_near_the_float64_max_and_on_non_finite_input():
    # squares of 1e300 overflow float64: the scaled sum still gives 10 log10(2 / 1) for (a, a) vs (a, 0)
    big = 1e300
    assert metrics.sqnr_db([big, big], [big, 0.0]) == pytest.approx(10 * math.log10(2), abs=1e-9)
    # an error of 2^980 on 2^996 (both exact): 10 log10(2^1992 / 2^1960) = 320 log10 2, though 2^1992 is no float64
    assert metrics.sqnr_db([2.0**996], [2.0**996 - 2.0**980]) == pytest.approx(320 * math.log10(2), abs=1e-9)
    assert math.isnan(metrics.sqnr_db([math.inf], [0.0]))  # undefined: reported as NaN (null in JSON)
    assert math.isnan(metrics.sqnr_db([math.nan], [1.0]))
    assert ratio_db(1.0, math.inf) == -math.inf
    assert math.isnan(ratio_db(math.inf, math.inf))
    assert ratio_db(1e-300, 1e300) == pytest.approx(-6000)


def test_kl_top1_and_perplexity_by_hand():
    ref = torch.log(torch.tensor([[[0.5, 0.5, 1e-30], [0.7, 0.2, 0.1]]], dtype=torch.float64))
    q = torch.log(torch.tensor([[[0.25, 0.75, 1e-30], [0.7, 0.2, 0.1]]], dtype=torch.float64))
    # position 0: 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75); position 1: 0
    want = (0.5 * math.log(2) + 0.5 * math.log(2 / 3)) / 2
    assert metrics.kl_divergence(ref, q) == pytest.approx(want, rel=1e-9)
    assert metrics.kl_divergence(ref, ref) == 0
    # argmax: position 0 is a tie in ref (index 0) vs 1 in q; position 1 agrees
    assert metrics.top1_agreement(ref, q) == 0.5
    # uniform over 4 tokens: every next token has probability 1/4 -> perplexity 4
    uniform = torch.full((2, 5, 4), math.log(0.25), dtype=torch.float64)
    ids = torch.tensor([[0, 1, 2, 3, 0], [3, 3, 3, 3, 3]])
    assert metrics.perplexity(uniform, ids) == pytest.approx(4.0, rel=1e-12)
    # p(next) = 1/2 everywhere: perplexity 2
    lp = torch.log(torch.tensor([0.5, 0.5, 1e-30, 1e-30], dtype=torch.float64)).expand(1, 3, 4)
    assert metrics.perplexity(lp, torch.tensor([[0, 1, 0]])) == pytest.approx(2.0, rel=1e-9)


def test_mxfp4_block_clipped_flushed_subnormal_counts():
    # One 1x32 MXFP4 block, amax 7: the FLOOR rule gives scale 2^(2 - 2) = 1, so |x| > 6 clips
    # (7 and 6.5), |x| < 0.25 rounds to zero (0.1, -0.2, 0.24), and |x| in [0.25, 0.75) is the
    # subnormal 0.5 (0.5, -0.6, 0.3). The other 24 elements are 1.0; one is exactly zero.
    x = np.ones((1, 32), np.float32)
    x[0, :9] = [7.0, -6.5, 0.1, -0.2, 0.24, 0.5, -0.6, 0.3, 0.0]
    q = quantize(x, "mxfp4", role="weight")
    assert float(np.asarray(q.scale_fp32).ravel()[0]) == 1.0
    s = metrics.code_stats(x, q)
    assert s["clipped"] == 2 / 32
    assert s["flushed"] == 3 / 32  # the exact zero is not "flushed"
    assert s["subnormal"] == 3 / 32
    assert s["max_abs_error"] == pytest.approx(1.0)  # 7 -> 6


def test_deepseek_tile_partial_blocks_and_no_clipping():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((130, 200)).astype(np.float32)
    x[0, 0] = 1e-9  # far below the block's smallest subnormal step: flushed
    q = quantize(x, "deepseek-v3.1", role="weight")
    scale = metrics.expand_scale(q)
    grid = np.asarray(q.scale_fp32)
    assert scale.shape == x.shape and grid.shape == (2, 2)
    assert scale[129, 199] == grid[1, 1] and scale[127, 127] == grid[0, 0] and scale[128, 0] == grid[1, 0]
    s = metrics.code_stats(x, q)
    assert s["clipped"] == 0  # the ceil rule never lets amax / scale pass 448
    assert s["flushed"] == 1 / x.size
    y = metrics.dequantized(q)
    np.testing.assert_array_equal(y.astype(np.float32), np.asarray(q.dequantize(np.float32)))
    assert 25 < s["sqnr_db"] < 40


def test_mxfp8_floor_rule_saturates_the_block_maximum():
    x = np.full((1, 32), 1.0, np.float32)
    x[0, 0] = 500.0  # amax 500: FLOOR scale 2^(8 - 8) = 1 -> 500 > 448 saturates to 448
    q = quantize(x, "mxfp8", role="weight")
    s = metrics.code_stats(x, q)
    assert s["clipped"] == 1 / 32
    assert float(np.asarray(q.dequantize(np.float32))[0, 0]) == 448.0


def test_error_histogram_counts_exact_apart():
    x = np.array([1.0, 1.0, 1.0, 1.0])
    y = np.array([1.0, 1.0, 1.0 + 1.5e-3, 1.0 - 1.5e-2])
    counts, exact = metrics.error_histogram(x, y)
    assert exact == 2 and sum(counts) == 2
    edges = metrics.HIST_EDGES
    assert counts[edges.index(-3.0)] == 1 and counts[edges.index(-2.0)] == 1
