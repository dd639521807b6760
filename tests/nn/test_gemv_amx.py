"""The GEMV's AMX route (cpu/gemm_amx.h): bf16 activations, 3-8 rows, weight tiles decoded to bf16 with
the block scale folded in. It must stay within the bound test_fused.py states, be taken where its scale
split applies (so the tests above exercise it on AMX machines) and be refused where a code's value times
its scale would leave bf16's normal range (AMX flushes subnormals)."""

from __future__ import annotations

import pytest
import torch

from fp8port import cpu
from fp8port.cpu import Isa, gemm

from .test_fused import _check, _check_split_refused, _layer

AMX = gemm.available() and Isa.AVX512 in cpu.tiers() and gemm._cpu_amx()
pytestmark = pytest.mark.skipif(not AMX, reason="no AMX-BF16 here (or the kernel refuses the tiles)")


def _run(fl, xb, amx: bool):
    with cpu.forced(Isa.AVX512), gemm.amx(amx), torch.no_grad():
        return fl(xb)


@pytest.mark.parametrize("preset", ["deepseek-v3.1", "mxfp4", "nvfp4", "mxfp8", "msmodelslim-fp8", "msmodelslim-int4"])
@pytest.mark.parametrize("factor", [2.0**-90, 1.0, 2.0**90])  # scale exponents far from 0: the folded exponent
def test_amx_within_the_bound_and_taken(preset, factor):
    # ragged: a partial tile of 16 rows, K not a multiple of 32 (masked code loads), partial blocks
    for n, k in [(37, 200), (48, 1000)]:
        lin, fl, w = _layer(preset, n, k, factor)
        for m in (3, 5, 8):
            xb = torch.randn(m, k).bfloat16()
            y = _run(fl, xb, True)
            assert fl.fused_weight()._amx_now()[1], f"{preset}: the AMX route was not taken"
            _check(y, xb.float(), w, lin.bias, f"{preset} x{factor} {n}x{k} M={m} amx")
            _check(_run(fl, xb, False), xb.float(), w, lin.bias, f"{preset} x{factor} {n}x{k} M={m} no amx")


@pytest.mark.parametrize("preset", ["mxfp4", "deepseek-v3.1"])
def test_amx_refused_below_bf16_normals(preset):
    """Scales of 2^-126: a code's value times it is subnormal (or zero), which AMX would flush; the plan
    refuses the route and the result stays within the bound. Writing normal scales back brings it back."""
    _check_split_refused(preset, lambda fl, xb: _run(fl, xb, True))


def test_amx_switch():
    with gemm.amx(False):
        assert not gemm.has_amx()
    with cpu.forced(Isa.AVX512), gemm.amx(True):
        assert gemm.has_amx()
    with cpu.forced(Isa.AVX2), gemm.amx(True):
        assert not gemm.has_amx()
