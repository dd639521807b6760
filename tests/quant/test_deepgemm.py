"""deepseek-v3.1 against a straightforward torch transcription of DeepGEMM's published casts
(deep_gemm/utils/math.py: ceil_to_ue8m0, per_token_cast_to_fp8, per_block_cast_to_fp8), byte for
byte on adversarial data. Written from the described behaviour, not copied."""

import numpy as np
import pytest
import torch
from conftest import KERNELS, quantize_on

from fp8port.quant import get_preset, quantize


def ceil_to_ue8m0(sf):
    bits = sf.abs().float().view(torch.int32)
    exp = ((bits >> 23) & 0xFF) + (bits & 0x7FFFFF).bool().int()
    return (exp.clamp(1, 254) << 23).view(torch.float32)


def per_token(x, gran=128):
    m, n = x.shape
    pad = (-n) % gran
    xp = torch.nn.functional.pad(x.float(), (0, pad)).view(m, -1, gran)
    amax = xp.abs().amax(dim=2).clamp(1e-4)
    sf = ceil_to_ue8m0(amax / 448.0)
    q = (xp * (1.0 / sf.unsqueeze(2))).to(torch.float8_e4m3fn).view(m, -1)[:, :n]
    return q.view(torch.uint8), sf


def per_block(x, gran=128):
    m, n = x.shape
    xp = torch.zeros(m + (-m) % gran, n + (-n) % gran, dtype=torch.float32)
    xp[:m, :n] = x.float()
    v = xp.view(xp.shape[0] // gran, gran, xp.shape[1] // gran, gran)
    amax = v.abs().amax(dim=(1, 3), keepdim=True).clamp(1e-4)
    sf = ceil_to_ue8m0(amax / 448.0)
    q = (v * (1.0 / sf)).to(torch.float8_e4m3fn).view_as(xp)[:m, :n].contiguous()
    return q.view(torch.uint8), sf.view(v.shape[0], v.shape[2])


def adversarial(m, n, seed):
    """Zeros, bf16 subnormals, amax 448*2^k and +-1 ulp, 1e6x outliers, blocks under the 1e-4 clamp."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, n, generator=g) * torch.exp(3 * torch.randn(m, 1, generator=g))
    x[0] = 0.0
    x[1] = torch.randn(n, generator=g) * 2.0**-130  # float32 subnormals (bf16 subnormals too)
    x[2] = torch.randn(n, generator=g) * 1e-6  # under the clamp
    x[3] = torch.randn(n, generator=g)
    x[3, ::128] = 1e6
    for r, k in zip(range(4, 10), (-9, -4, 0, 3, 7, 15)):
        base = torch.tensor(448.0 * 2.0**k)
        x[r] = torch.rand(n, generator=g) * base
        x[r, ::128] = (
            torch.nextafter(base, torch.tensor(np.inf))
            if r % 3 == 0
            else (torch.nextafter(base, torch.tensor(0.0)) if r % 3 == 1 else base)
        )
    x[10:20] = x[10:20] * 1e-4
    return x


SHAPES = [(200, 7168 // 8 + 64), (130, 384), (257, 129)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("be", KERNELS)
def test_activation_matches_per_token_cast(shape, dtype, be):
    x = adversarial(*shape, seed=shape[0]).to(dtype)
    q_ref, sf_ref = per_token(x)
    q = quantize_on(x, "deepseek-v3.1", be, role="activation")
    assert torch.equal(q.codes, q_ref)
    assert torch.equal(q.scale.view(torch.int32), sf_ref.view(torch.int32))
    assert torch.equal(q.scale_fp32, sf_ref)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("be", KERNELS)
def test_weight_matches_per_block_cast(shape, dtype, be):
    x = adversarial(*shape, seed=7 + shape[1]).to(dtype)
    q_ref, sf_ref = per_block(x)
    q = quantize_on(x, "deepseek-v3.1", be, role="weight")
    assert q.grid == tuple(sf_ref.shape)
    assert torch.equal(q.codes, q_ref)
    assert torch.equal(q.scale_fp32.view(torch.int32), sf_ref.view(torch.int32))


def test_e8m0_storage_is_the_exponent_byte():
    x = adversarial(64, 256, seed=3)
    q = quantize(x, get_preset("deepseek-v3.1").activation.with_(storage="e8m0"))
    _, sf = per_token(x)
    assert q.scale.dtype == torch.float8_e8m0fnu
    assert torch.equal(q.scale.view(torch.uint8).int(), (sf.view(torch.int32) >> 23))
