"""The fused weight-only kernels (nn/fused.py, cpu/gemm.c) equal dequantize -> float32 matmul up to the
float32 reassociation bound docs/kernels.md states: |y - y_ref| <= (2K + 4) u sum_k |x_k w_k| (u = 2^-24),
plus bf16's rounding of the output and the bias (2^-8 (|y_ref| + |b|)) where the activations are bf16
(the output rounded twice where the prefill scales a bf16 GEMM's output: nn/prefill.py). Every preset,
ragged shapes, decode (GEMV) and prefill (slab) row counts, both modes, every ISA tier this CPU runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import fp8port
from fp8port import cpu
from fp8port.cpu import gemm
from fp8port.nn import FP8Linear, fused, prefill
from fp8port.quant import PRESETS

pytestmark = pytest.mark.skipif(not gemm.available(), reason="the C kernels are not built here")

U = 2.0**-24


def _layer(preset: str, n: int, k: int, factor: float = 1.0, seed: int = 0):
    """(a random nn.Linear with its weight times factor, its FP8Linear, the dequantized weight)."""
    torch.manual_seed(seed)
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.mul_(factor)
    fl = FP8Linear.from_linear(lin, preset)
    return lin, fl, fl.dequantized_weight()


def _check_split_refused(preset: str, run):
    """Scales of 2^-126 make a code's value times its scale subnormal (or zero), which AMX and vdpbf16ps
    flush: the scale split (the AMX / folded routes' plan) is refused and run(fl, xb) stays within the
    bound; writing the normal scales back brings the split back."""
    lin, fl, _ = _layer(preset, 32, 256)
    xb = torch.randn(8, 256).bfloat16()
    keep = fl.scale_fp32.clone()
    fl.scale_fp32.fill_(2.0**-126)
    y = run(fl, xb)
    assert fl.fused_weight()._amx_now()[1] == 0
    _check(y, xb.float(), fl.dequantized_weight(), lin.bias, f"{preset} tiny scales")
    fl.scale_fp32.copy_(keep)
    _check(run(fl, xb), xb.float(), fl.dequantized_weight(), lin.bias, f"{preset} scales back")
    assert fl.fused_weight()._amx_now()[1]


def _check(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, bias, what: str, roundings: int = 1):
    """y against x (float32 values) @ w.T + bias computed in float64, within the stated bound; roundings:
    bf16 roundings of the output (2 where the prefill's bf16 GEMM is followed by an output factor)."""
    x64, w64 = x.double(), w.double()
    ref = x64 @ w64.T + (0 if bias is None else bias.double())
    mag = x64.abs() @ w64.abs().T + (0 if bias is None else bias.double().abs())
    tol = (2 * x.shape[-1] + 4) * U * mag
    if y.dtype == torch.bfloat16:
        tol = tol + 2.0**-8 * (roundings * ref.abs() + (0 if bias is None else bias.double().abs()))
    err = (y.double() - ref).abs()
    assert (err <= tol).all(), f"{what}: worst excess {(err - tol).max().item():.3g}"


TIERS = [t.value for t in cpu.tiers()]


def _roundings(fl: FP8Linear, m: int) -> int:
    """bf16 roundings of a bf16 output: two where the prefill runs a bf16 GEMM and then scales its output
    by a factor other than 1 (nn/prefill.py: torch's CPU bf16 GEMM has no float32 output)."""
    sp = fl.fused_weight().prefill.split
    scaled = sp is not None and sp.kind != "exact" and prefill.SCALED_BF16 and prefill.bf16_gemm_fast()
    return 2 if m > fused.GEMV_ROWS and scaled else 1


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_weight_only_within_the_bound(preset, tier):
    torch.manual_seed(0)
    for n, k in [(37, 200), (130, 288)]:  # ragged: partial blocks along N and K, tails shorter than a vector
        lin = nn.Linear(k, n)
        fl = FP8Linear.from_linear(lin, preset)
        w = torch.from_numpy(np.asarray(fp8port.dequantize(fp8port.quantize(lin.weight.detach(), preset), "float32")))
        with cpu.forced(tier), torch.no_grad():
            assert fl.fused_weight().runs(torch.float32), fl.fused_weight().why
            for m in (1, 3, 5, 8, 13):  # GEMV (<= 8 rows: the folded route's passes of 3-8) and the prefill
                x = torch.randn(m, k)
                _check(fl(x), x, w, lin.bias, f"{preset} {tier} {n}x{k} M={m} float32")
                xb = x.bfloat16()
                # AMX and the folded route (CPUs without AMX, or AMX off): sub-choices of dot
                routes = ((False, False, False), (True, False, False), (True, False, True), (True, True, True))
                for dot, amx, fold in routes:
                    with gemm.bf16_dot(dot), gemm.amx(amx), fused.folded(fold):
                        y = fl(xb)
                    assert y.dtype == torch.bfloat16
                    what = f"{preset} {tier} {n}x{k} M={m} bf16 dot={dot} amx={amx} fold={fold}"
                    _check(y, xb.float(), w, lin.bias, what, _roundings(fl, m))


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("preset", ["deepseek-v3.1", "mxfp4", "nvfp4", "mxint8"])
def test_w8a8_within_the_bound(preset, tier):
    torch.manual_seed(1)
    lin = nn.Linear(320, 70, bias=False)
    fl = FP8Linear.from_linear(lin, preset, mode="w8a8")
    w = fl.dequantized_weight()
    with cpu.forced(tier), torch.no_grad():
        for m in (1, 5, 12):
            x = torch.randn(2, m, 320)
            xq = torch.as_tensor(
                fp8port.dequantize(fp8port.quantize(x.reshape(-1, 320), preset, role="activation"), "float32")
            )
            y = fl(x)
            assert y.shape == (2, m, 70)
            _check(y.reshape(-1, 70), xq, w, None, f"w8a8 {preset} {tier} M={m}")
            with fused.disabled():
                want = fl(x)
            assert torch.allclose(y, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_decode_rows_is_the_reference_dequantize():
    """The prefill path's dense chunks are bit-exact (float32, and bf16 where exact)."""
    torch.manual_seed(2)
    for preset in sorted(PRESETS):
        lin = nn.Linear(200, 37)
        fl = FP8Linear.from_linear(lin, preset)
        fw = fl.fused_weight()
        for tier in TIERS:
            with cpu.forced(tier):
                out = torch.empty(37, 200)
                gemm.decode_rows(fw.g, 0, 37, out.data_ptr(), False)
                assert torch.equal(out, fl.dequantized_weight()), f"{preset} {tier}"
                if fw.bf16_exact:
                    ob = torch.empty(37, 200, dtype=torch.bfloat16)
                    gemm.decode_rows(fw.g, 0, 37, ob.data_ptr(), True)
                    assert torch.equal(ob, fl.dequantized_weight(torch.bfloat16)), f"{preset} {tier} bf16"


def test_decode_rows_bf16_route_is_the_reference_dequantize():
    """K a multiple of 32 takes the AVX-512 BF16 row decoder (cpu/decode_bf16.h) where the CPU has it:
    the same bytes as the reference on every tier, also for blocks whose scales make some products
    subnormal (bf16 subnormals, which vcvtne2ps2bf16 would flush: those blocks take gm_bf16) and rows of
    zero-scale blocks."""
    torch.manual_seed(3)
    for preset in ("deepseek-v3.1", "mxfp4", "nvfp4", "mxfp8"):
        lin = nn.Linear(256, 48)
        fl = FP8Linear.from_linear(lin, preset)
        fw = fl.fused_weight()
        if not fw.bf16_exact:
            continue
        with torch.no_grad():  # tiny power-of-two scales: products down to bf16's subnormals
            fl.scale_fp32.view(-1)[0] = 2.0**-125
            fl.scale_fp32.view(-1)[-1] = 0.0
        want = fl.dequantized_weight(torch.bfloat16)
        assert (want.float().abs() < 2.0**-126).any() and (want != 0).any(), preset
        for tier in TIERS:
            with cpu.forced(tier):
                for n0, n1 in ((0, 48), (5, 31)):
                    ob = torch.empty(n1 - n0, 256, dtype=torch.bfloat16)
                    gemm.decode_rows(fw.g, n0, n1, ob.data_ptr(), True)
                    assert torch.equal(ob.view(torch.int16), want[n0:n1].view(torch.int16)), f"{preset} {tier}"


def test_decode_rows_smul_rounds_each_scale_to_bf16():
    """smul (the prefill's tensor split, NVFP4): rows as if each scale were bf16(S * smul), rounded once from
    the float32 product (prefill._tensor_b), on every tier and for slabs starting inside a block row."""
    torch.manual_seed(4)
    for preset in ("nvfp4", "deepseek-v3.1"):
        fl = FP8Linear.from_linear(nn.Linear(256, 40), preset)
        fw = fl.fused_weight()
        inv_t = float(np.float32(1 / 3.0))
        ref = FP8Linear.from_linear(nn.Linear(256, 40), preset)
        with torch.no_grad():
            ref.codes.copy_(fl.codes)
            ref.scale_fp32.copy_(torch.from_numpy(prefill._tensor_b(fl.scale_fp32.numpy(), np.float32(inv_t))))
        want = ref.dequantized_weight(torch.bfloat16)
        for tier in TIERS:
            with cpu.forced(tier):
                for n0, n1 in ((0, 40), (3, 29)):
                    ob = torch.empty(n1 - n0, 256, dtype=torch.bfloat16)
                    gemm.decode_rows(fw.g, n0, n1, ob.data_ptr(), True, smul=inv_t)
                    assert torch.equal(ob.view(torch.int16), want[n0:n1].view(torch.int16)), f"{preset} {tier}"


def test_non_finite_codes_fall_back():
    """A weight holding a NaN code is not taken by the kernels (they assume finite values); the layer
    then runs the dequantize-then-matmul path and says why."""
    lin = nn.Linear(64, 16, bias=False)
    fl = FP8Linear.from_linear(lin, "mxfp8")
    fl.codes[0, 0] = 0x7F  # E4M3 NaN
    fl._fw = None
    fw = fl.fused_weight()
    assert fw.g is None and "not finite" in fw.why
    with torch.no_grad():
        y = fl(torch.ones(1, 64))
    assert torch.isnan(y[0, 0]) and torch.isfinite(y[0, 1:]).all()


def test_replaced_buffers_remake_the_plan():
    lin = nn.Linear(64, 16, bias=False)
    fl = FP8Linear.from_linear(lin, "mxfp8")
    x = torch.randn(1, 64)
    with torch.no_grad():
        fl(x)
        fl.codes = fl.codes.clone().zero_()
        assert torch.equal(fl(x), torch.zeros(1, 16))


def test_threads_share_a_layer():
    """Each thread fills its own copy of the kernels' parameters: concurrent calls on one layer agree."""
    from concurrent.futures import ThreadPoolExecutor

    torch.manual_seed(4)
    fl = FP8Linear.from_linear(nn.Linear(256, 96), "mxfp4")
    xs = [torch.randn(m, 256) for m in (1, 2, 5, 8) for _ in range(32)]
    with torch.no_grad():
        want = [fl(x) for x in xs]
        with ThreadPoolExecutor(4) as ex:
            got = list(ex.map(fl, xs))
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_inputs_that_need_gradients_take_the_dense_path():
    """The kernels record no autograd graph, so such inputs get the dequantize-then-matmul path."""
    fl = FP8Linear.from_linear(nn.Linear(64, 16), "mxfp8")
    x = torch.randn(2, 64, requires_grad=True)
    fl(x).sum().backward()
    assert torch.allclose(x.grad, fl.dequantized_weight().sum(0).expand(2, 64))


@pytest.mark.parametrize(
    "preset", ["nvfp4", "ct-nvfp4", "msmodelslim-int8", "msmodelslim-fp8", "deepseek-v3", "deepseek-v3.1", "mxfp4"]
)
def test_prefill_gemms_within_the_bound(preset, monkeypatch):
    """The prefill's bf16 GEMM (with the scale split into exact bf16 rows and an output factor: NVFP4's
    tensor scale, per-channel scales) and its float32 GEMM (CPUs whose bf16 GEMM is slow) against
    dequantize -> float32 matmul, in one slab and in several."""
    torch.manual_seed(5)
    n, k = 70, 320
    lin = nn.Linear(k, n)
    fl = FP8Linear.from_linear(lin, preset)
    w = fl.dequantized_weight()
    want = {"nvfp4": "tensor", "ct-nvfp4": "tensor", "msmodelslim-int8": "rows", "msmodelslim-fp8": "rows"}
    sp = fl.fused_weight().prefill.split
    assert (sp.kind if sp else None) == want.get(preset, "exact" if preset != "deepseek-v3" else None)
    x = torch.randn(2, 20, k)
    for fast in (True, False):
        monkeypatch.setattr(prefill, "bf16_gemm", fast)
        for ws in (prefill.WORKSPACE_BYTES, 16 * k * 2):  # one slab; slabs of 16 rows
            monkeypatch.setattr(prefill, "WORKSPACE_BYTES", ws)
            with torch.no_grad():
                y32, yb = fl(x), fl(x.bfloat16())
            assert yb.dtype == torch.bfloat16 and yb.shape == (2, 20, n)
            _check(y32.reshape(-1, n), x.reshape(-1, k), w, lin.bias, f"{preset} float32 fast={fast} ws={ws}")
            xb = x.bfloat16().float().reshape(-1, k)
            _check(yb.reshape(-1, n), xb, w, lin.bias, f"{preset} bf16 fast={fast} ws={ws}", _roundings(fl, 40))


def test_prefill_workspace_is_bounded_and_released(monkeypatch):
    """The dense rows live in one buffer per thread, kept between calls: at most WORKSPACE_BYTES (the weight
    in slabs), reused without changing results, freed by release_workspace; other threads hold their own.
    Resident memory stays codes plus scales plus that bound."""
    import threading
    import weakref

    monkeypatch.setattr(prefill, "WORKSPACE_BYTES", 32 * 256 * 2)  # 32 bf16 rows: three slabs of 96
    prefill.release_workspace()
    fl = FP8Linear.from_linear(nn.Linear(256, 96), "nvfp4")
    xs = (torch.randn(16, 256), torch.randn(16, 256).bfloat16())
    with torch.no_grad():
        first = [fl(x) for x in xs]
        held = prefill._held.buf
        assert 0 < held.numel() <= prefill.WORKSPACE_BYTES
        again = [fl(x) for x in xs]
        assert prefill._held.buf is held
        assert all(torch.equal(a, b) for a, b in zip(first, again))
        seen = []
        t = threading.Thread(target=lambda: (fl(xs[1]), seen.append(prefill._held.buf)))
        t.start()
        t.join()
        assert seen[0] is not None and seen[0] is not held
        seen.clear()
    ref = weakref.ref(held)
    del held
    prefill.release_workspace()
    assert ref() is None


def test_prefill_follows_scales_written_in_place():
    """The kernels read the scale buffer in place, so the prefill's split is found again after a write."""
    torch.manual_seed(6)
    lin = nn.Linear(128, 48, bias=False)
    fl = FP8Linear.from_linear(lin, "mxfp8")
    x = torch.randn(20, 128).bfloat16()
    with torch.no_grad():
        fl(x)
        assert fl.fused_weight().prefill.split.kind == "exact"
        fl.scale_fp32.mul_(3)  # no longer powers of two
        y = fl(x)
    assert fl.fused_weight().prefill.split.kind == "tensor"
    _check(y, x.float(), fl.dequantized_weight(), None, "mxfp8 scales x 3", _roundings(fl, 20))
    with torch.inference_mode():  # buffers made here have no version counter
        fi = FP8Linear.from_linear(lin, "nvfp4")
        _check(fi(x), x.float(), fi.dequantized_weight(), None, "nvfp4 inference mode", _roundings(fi, 20))


def test_decode_fast_path_rechecks_what_changes():
    """After its first call a layer decodes through the prepared plan; a forced tier, fused.disabled(), a
    wrong input width and a replaced buffer still take effect there."""
    torch.manual_seed(5)
    fl = FP8Linear.from_linear(nn.Linear(64, 16, bias=False), "mxfp4")
    x = torch.randn(2, 1, 64)
    with torch.no_grad():
        assert fl(x).shape == (2, 1, 16)
        fw = fl._fw
        for t in TIERS:
            with cpu.forced(t):
                fl(x)
                assert fw._tier == cpu._BIT[cpu.Isa.parse(t)]
        with fused.disabled():
            assert torch.equal(fl(x), nn.functional.linear(x, fl.dequantized_weight()))
        with pytest.raises(fp8port.errors.ShapeError):
            fl(torch.randn(1, 63))
        fl.scale_fp32 = fl.scale_fp32 * 0
        assert torch.equal(fl(x), torch.zeros(2, 1, 16)) and fl._fw is not fw
