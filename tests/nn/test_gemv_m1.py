"""The AVX2 tier's one-row GEMV (cpu/gemv1_avx2.h): FP8 with the activations pre-multiplied by
2^(127 - bias), 4-bit codes with the activations permuted. Both stay within docs/kernels.md's bound on
rows long enough for several L1 chunks, decline activations whose pre-multiplied value would not be
finite (then gemm.h's generic body runs), and every tier here agrees on non-finite outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import fp8port
from fp8port import cpu
from fp8port.cpu import gemm
from fp8port.nn import FP8Linear
from fp8port.quant import Scheme

pytestmark = pytest.mark.skipif(not gemm.available(), reason="the C kernels are not built here")

U = 2.0**-24
TIERS = [t.value for t in cpu.tiers()]
# E5M2 (a shift of 21 instead of E4M3's 20) in 1x128 blocks: no preset has it
E5M2 = Scheme.build("float8_e5m2", "ue8m0", "1x128", name="e5m2-1x128")
# FP8 128x128 and per row (whole-row blocks), 4-bit in blocks of 32 and 16 and per row (INT4)
SCHEMES = ["deepseek-v3.1", "msmodelslim-fp8", "mxfp4", "nvfp4", "msmodelslim-int4", E5M2]


def _check(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, what: str):
    x64, w64 = x.double(), w.double()
    ref = x64 @ w64.T
    tol = (2 * x.shape[-1] + 4) * U * (x64.abs() @ w64.abs().T)
    if y.dtype == torch.bfloat16:
        tol = tol + 2.0**-8 * ref.abs()
    err = (y.double() - ref).abs()
    assert (err <= tol).all(), f"{what}: worst excess {(err - tol).max().item():.3g}"


def _layer(scheme, n, k):
    lin = nn.Linear(k, n, bias=False)
    fl = FP8Linear.from_linear(lin, scheme)
    q = fp8port.quantize(lin.weight.detach(), scheme)
    w = torch.from_numpy(np.asarray(fp8port.dequantize(q, "float32")))
    return fl, w


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: getattr(s, "name", s))
def test_one_row_within_the_bound(scheme, tier):
    torch.manual_seed(1)
    # 4608 codes: two chunks of at most 4096 along K; 67 x 4608 is enough work for two threads (ranges of
    # whole groups of four rows, the last one with a rest); 5 and 9 rows: one thread, a group and a rest
    for n, k in [(67, 4608), (5, 96), (9, 544)]:
        fl, w = _layer(scheme, n, k)
        with cpu.forced(tier), torch.no_grad():
            assert fl.fused_weight().runs(torch.float32), fl.fused_weight().why
            for scale in (1.0, 2.0**-60, 2.0**40):  # tiny / large activations: products near the range ends
                x = torch.randn(1, k) * scale
                _check(fl(x), x, w, f"{scheme} {tier} {n}x{k} x*{scale} float32")
                xb = x.bfloat16()
                _check(fl(xb), xb.float(), w, f"{scheme} {tier} {n}x{k} x*{scale} bf16")


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("scheme", ["deepseek-v3.1", E5M2], ids=lambda s: getattr(s, "name", s))
def test_large_activations_decline_the_fold(scheme, tier):
    """x * 2^120 (E4M3) overflows from |x| = 2^8 on: such a row must take the generic body, still exact
    to the bound; an Inf / NaN in x gives the same non-finite outputs on every tier."""
    torch.manual_seed(2)
    n, k = 6, 512
    fl, w = _layer(scheme, n, k)
    x = torch.randn(1, k)
    x[0, 7] = 2.0**20
    x[0, 300] = -3.0e30
    with cpu.forced(tier), torch.no_grad():
        _check(fl(x), x, w, f"{scheme} {tier} large x")
    xs = x.clone()
    xs[0, 11], xs[0, 12] = float("inf"), float("nan")
    outs = {}
    for t in TIERS:
        with cpu.forced(t), torch.no_grad():
            outs[t] = fl(xs)
    for t, y in outs.items():
        assert torch.equal(torch.isnan(y), torch.isnan(outs[TIERS[0]])), t


@pytest.mark.parametrize("tier", TIERS)
def test_subnormal_activations_under_flush_denormal(tier):
    """The fold multiplies x before the kernel's own FP_ENTER: a caller's denormals-are-zero must not make
    float32 subnormal activations zero there."""
    torch.manual_seed(3)
    n, k = 5, 256
    fl, w = _layer("deepseek-v3.1", n, k)
    x = torch.randn(1, k) * 2.0**-135  # float32 subnormals
    with cpu.forced(tier), torch.no_grad():
        fl(x)  # the layer's plan first: making it may reset the flags set_flush_denormal sets
        assert torch.set_flush_denormal(True)
        try:
            y = fl(x)
        finally:
            torch.set_flush_denormal(False)
    _check(y, x, w, f"{tier} subnormal x under flush_denormal")
