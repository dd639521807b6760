"""QuantizedExperts: expert i dequantized on demand equals the whole tensor dequantized, sliced."""

import numpy as np
import pytest
import torch

from fp8port import dequantize, quantize
from fp8port.errors import ShapeError
from fp8port.nn import QuantizedExperts
from fp8port.quant import BlockShape, get_preset


@pytest.mark.parametrize(
    "preset, block, axis", [("mxfp4", "1x32", -2), ("mxfp4", "1x32", 2), ("deepseek-v3.1", "64x64", -1)]
)
def test_each_expert_equals_the_sliced_dequantization(preset, block, axis, rng=np.random.default_rng(0)):
    x = (rng.standard_normal((3, 64, 96)) * np.exp(rng.standard_normal((3, 1, 96)))).astype(np.float32)
    q = quantize(x, get_preset(preset).weight.with_(block=BlockShape.parse(block, axis)))
    experts = QuantizedExperts(q, torch.bfloat16)
    whole = np.asarray(dequantize(q, "bfloat16")).view(np.int16)
    assert len(experts) == 3
    for i in range(3):
        assert np.array_equal(experts[torch.tensor(i)].view(torch.int16).numpy(), whole[i])
    if preset == "mxfp4":  # FP4 codes held two per byte
        assert experts.resident_bytes() == x.size // 2 + 4 * np.asarray(q.scale_fp32).size


def test_blocks_across_experts_are_refused():
    q = quantize(np.ones((2, 32, 32), np.float32), get_preset("hif8").weight.with_(block="tensor"))
    with pytest.raises(ShapeError, match="blocks inside each expert"):
        QuantizedExperts(q)
