"""The GEMV's folded BF16 route (cpu/gemm_bf16.h fs_*): bf16 activations, FOLD_ROWS-8 rows, on AVX-512 BF16
CPUs without AMX (or with it switched off): the AMX route's scale split S = b c, b folded into the decoded
bf16 weights, vdpbf16ps over whole chunks of K, c times the output. It must stay within the bound
test_fused.py states for every row count it serves (each has its own register blocking), ragged N and K
(masked code loads, a zero-padded last step), chunks of K, scales far from 1 (the folded exponent), and
be refused where a code's value times its scale would leave bf16's normal range (vdpbf16ps flushes
subnormals)."""

from __future__ import annotations

import pytest
import torch

from fp8port import cpu
from fp8port.cpu import Isa, gemm
from fp8port.nn import fused

from .test_fused import _check, _check_split_refused, _layer

BF16 = gemm.available() and Isa.AVX512 in cpu.tiers() and bool(gemm._gemm_lib().fp8_gemm_bf16dot())
pytestmark = pytest.mark.skipif(not BF16, reason="no AVX-512 BF16 here")


def _run(fl, xb, fold: bool):
    with cpu.forced(Isa.AVX512), gemm.amx(False), fused.folded(fold), torch.no_grad():
        return fl(xb)


@pytest.mark.parametrize("preset", ["deepseek-v3.1", "mxfp4", "nvfp4", "mxfp8", "msmodelslim-fp8", "msmodelslim-int4"])
@pytest.mark.parametrize("factor", [2.0**-90, 1.0, 2.0**90])  # scale exponents far from 0: the folded exponent
def test_folded_within_the_bound(preset, factor):
    # ragged: odd N (the last rows one at a time), K not a multiple of 32, partial blocks
    for n, k in [(37, 200), (19, 1000)]:
        lin, fl, w = _layer(preset, n, k, factor)
        for m in range(fused.FOLD_ROWS, fused.GEMV_ROWS + 1):
            xb = torch.randn(m, k).bfloat16()
            y = _run(fl, xb, True)
            assert fl.fused_weight()._amx_now()[1], f"{preset}: no split for the folded route"
            _check(y, xb.float(), w, lin.bias, f"{preset} x{factor} {n}x{k} M={m} folded")
            _check(_run(fl, xb, False), xb.float(), w, lin.bias, f"{preset} x{factor} {n}x{k} M={m} not folded")


@pytest.mark.parametrize("preset", ["deepseek-v3.1", "nvfp4"])
def test_folded_chunks_of_k(preset):
    """K past one chunk (activations of at most 256 KB: 16,384 codes at M = 8): sums carried across chunks."""
    lin, fl, w = _layer(preset, 6, 17000)
    for m in (3, 8):
        xb = torch.randn(m, 17000).bfloat16()
        _check(_run(fl, xb, True), xb.float(), w, lin.bias, f"{preset} 6x17000 M={m} folded")


@pytest.mark.parametrize("preset", ["mxfp4", "deepseek-v3.1"])
def test_folded_refused_below_bf16_normals(preset):
    """Scales of 2^-126: a code's value times it is subnormal (or zero), which vdpbf16ps would flush; the
    split is refused, the BF16 route runs and the result stays within the bound. Normal scales bring it back."""
    _check_split_refused(preset, lambda fl, xb: _run(fl, xb, True))


def test_folded_switch():
    lin, fl, w = _layer("deepseek-v3.1", 16, 128)
    xb = torch.randn(4, 128).bfloat16()
    with fused.folded(False):
        assert not fused._fold_on
        _check(_run(fl, xb, False), xb.float(), w, lin.bias, "folded off")
    assert fused._fold_on
