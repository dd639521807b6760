"""FP8Linear and quantize_model: weight-only is exactly the dequantized layer; w8a8 is the GEMM."""

import numpy as np
import pytest
import torch
from torch import nn

import fp8port
from fp8port.errors import ShapeError, UnknownNameError
from fp8port.nn import FP8Linear, fused, quantize_model, resident_bytes
from fp8port.quant import PRESETS


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("shape", [(192, 576), (256, 384)])
def test_weight_only_equals_the_dequantized_layer(preset, shape):
    """The dequantize-then-matmul path (the fused kernels' fallback; tests/nn/test_fused.py bounds theirs)."""
    torch.manual_seed(0)
    lin = nn.Linear(shape[1], shape[0])
    fl = FP8Linear.from_linear(lin, preset)
    w = torch.from_numpy(np.asarray(fp8port.dequantize(fp8port.quantize(lin.weight.detach(), preset), "float32")))
    x = torch.randn(3, 5, shape[1])
    with torch.no_grad(), fused.disabled():
        assert torch.equal(fl(x), nn.functional.linear(x, w, lin.bias))
        xb = x.bfloat16()
        assert torch.equal(fl(xb), nn.functional.linear(xb, fl.dequantized_weight(torch.bfloat16), lin.bias.bfloat16()))
    assert fl.resident_bytes() < lin.weight.numel() * 2 * 0.6  # about half of bf16 or less


@pytest.mark.parametrize("preset", ["deepseek-v3.1", "deepseek-v3", "mxfp8", "mxfp4", "nvfp4", "mxint8"])
def test_w8a8_is_the_block_scaled_gemm(preset):
    torch.manual_seed(1)
    lin = nn.Linear(576, 192, bias=False)
    fl = FP8Linear.from_linear(lin, preset, mode="w8a8")
    x = torch.randn(7, 576)
    aq = fp8port.quantize(x, preset, role="activation")
    want = fp8port.dequantize(aq, "float32") @ fl.dequantized_weight().T
    with torch.no_grad():
        got = fl(x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    rel = ((got - lin(x)).norm() / lin(x).norm()).item()
    assert rel < (0.08 if "4" not in preset else 0.3)  # it does approximate the dense layer


def test_quantize_model_replaces_what_a_conversion_would():
    model = nn.Sequential()
    model.add_module("embed_tokens", nn.Embedding(10, 256))
    model.add_module("q_proj", nn.Linear(256, 256))
    model.add_module("lm_head", nn.Linear(256, 10))
    before = resident_bytes(model)["total"]
    quantize_model(model, "deepseek-v3.1")
    assert isinstance(model.q_proj, FP8Linear) and isinstance(model.lm_head, nn.Linear)
    assert resident_bytes(model)["total"] < before


def test_errors():
    fl = FP8Linear.from_linear(nn.Linear(256, 128), "deepseek-v3.1")
    with pytest.raises(ShapeError, match="input has 200 features"):
        fl(torch.randn(2, 200))
    with pytest.raises(UnknownNameError, match="mode"):
        FP8Linear.from_linear(nn.Linear(256, 128), "deepseek-v3.1", mode="fp8-fast")
    with pytest.raises(ShapeError, match="2-D"):
        FP8Linear(torch.zeros(2, 3, 4, dtype=torch.uint8), torch.ones(1), fl.scheme)
