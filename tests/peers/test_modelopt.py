"""NVIDIA ModelOpt's NVFP4 layout, written by nvidia-modelopt 0.47 on CPU (its own venv), read by:
its own NVFP4QTensor.dequantize, our codecs, and compressed-tensors 0.20's ModelOptNvfp4Converter
(main venv) followed by compressed-tensors' own NVFP4 decompression.

The conventions differ by a reciprocal (quant/nvfp4.py): ModelOpt multiplies by weight_scale_2 = p,
compressed-tensors divides by weight_global_scale = g, and its converter sets g = fp32(1 / p). The
per-block float32 multipliers are then equal exactly where fp32(s * p) == fp32(s / fp32(1/p)), which
`nvfp4.conversion_report` predicts; measured here on real weights.
"""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

from fp8port.codec.packing import unpack
from fp8port.quant import nvfp4
from tests.peers import oracles
from tests.peers.oracles import bits_equal, load_numpy

pytestmark = pytest.mark.slow  # builds the ModelOpt venv and quantizes (about a minute)

BF16 = ml_dtypes.bfloat16


@pytest.fixture(scope="session")
def modelopt(peer):
    peer("modelopt")
    return oracles.modelopt_nvfp4(oracles.smollm2_layers(2))


def test_modelopt_files_and_config(modelopt):
    hf = json.loads((modelopt / "hf_quant_config.json").read_text())
    assert hf["producer"]["name"] == "modelopt"
    assert hf["quantization"]["quant_algo"] == "NVFP4" and hf["quantization"]["group_size"] == 16
    qc = json.loads((modelopt / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "modelopt" and qc["quant_algo"] == "NVFP4"
    t = load_numpy(modelopt / "model.safetensors")
    m = "model.layers.0.mlp.down_proj"
    assert t[m + ".weight"].dtype == np.uint8 and t[m + ".weight"].shape == (576, 768)
    assert t[m + ".weight_scale"].shape == (576, 96)  # E4M3 bytes
    assert t[m + ".weight_scale_2"].shape == () and t[m + ".weight_scale_2"].dtype == np.float32
    assert t[m + ".input_scale"].shape == () and t[m + ".input_scale"].dtype == np.float32
    # q/k/v share one weight_scale_2 (and gate/up), as in compressed-tensors' fused global scale
    p = lambda leaf: t[f"model.layers.0.{leaf}.weight_scale_2"]  # noqa: E731
    assert p("self_attn.q_proj") == p("self_attn.k_proj") == p("self_attn.v_proj")
    assert p("mlp.gate_proj") == p("mlp.up_proj")


def test_our_dequant_equals_modelopt_dequant(modelopt):
    t = load_numpy(modelopt / "model.safetensors")
    theirs = load_numpy(modelopt / oracles.DEQUANT)
    assert len(theirs) == 14
    for name, want in theirs.items():
        m = name[: -len(".weight")]
        codes = unpack(t[m + ".weight"], "float4_e2m1fn")
        mult = nvfp4.modelopt_multiplier(t[m + ".weight_scale"], t[m + ".weight_scale_2"])
        assert bits_equal(nvfp4.dequantize(codes, mult, signed_zero=False).astype(BF16), want), m
        # ModelOpt's table decodes code 8 as +0 where compressed-tensors' gives -0: only zeros differ
        signed = nvfp4.dequantize(codes, mult).astype(BF16)
        assert np.array_equal(signed.astype(np.float32), want.astype(np.float32))
        # in compressed-tensors' convention (g = fp32(1/p) of shape [1]: float32 s / g) the float32
        # multipliers may move by one ulp, the bf16 weights do not (on these weights)
        g = nvfp4.ct_global_from_modelopt(t[m + ".weight_scale_2"])
        assert nvfp4.conversion_report(t[m + ".weight_scale"], g)["roundtrip_exact"]
        ct = nvfp4.dequantize(codes, nvfp4.ct_multiplier(t[m + ".weight_scale"], g), signed_zero=False)
        assert bits_equal(ct.astype(BF16), want), m


def test_compressed_tensors_reads_modelopt_through_its_converter(modelopt):
    """ModelOptNvfp4Converter, then compressed-tensors' NVFP4 decompression. The converter writes
    weight_global_scale = fp32(1 / weight_scale_2) as a 0-d tensor, so compressed-tensors computes its
    multiplier s / g in bf16 (nvfp4.ct_multiplier_0d): one more rounding than ModelOpt's fp32(s * p)."""
    pytest.importorskip("compressed_tensors.entrypoints.convert.converters.modelopt_nvfp4")
    import torch
    from compressed_tensors.compressors import NVFP4PackedCompressor
    from compressed_tensors.entrypoints.convert.converters.modelopt_nvfp4 import ModelOptNvfp4Converter
    from compressed_tensors.quantization import QuantizationScheme
    from compressed_tensors.quantization.quant_scheme import NVFP4
    from safetensors.torch import load_file

    tensors = load_file(modelopt / "model.safetensors")
    conv = ModelOptNvfp4Converter(ignore=["lm_head", "re:.*embed_tokens"], targets=["Linear"])
    ct = conv.validate(dict(tensors))
    theirs = load_numpy(modelopt / oracles.DEQUANT)
    scheme = QuantizationScheme(targets=["Linear"], **NVFP4)
    differ = total = 0
    for name, want in theirs.items():
        m = name[: -len(".weight")]
        g = ct[m + ".weight_global_scale"]
        assert g.shape == () and g.item() == np.float32(1) / tensors[m + ".weight_scale_2"].numpy()
        assert ct[m + ".input_global_scale"].item() == np.float32(1) / tensors[m + ".input_scale"].numpy()
        sd = {k: ct[f"{m}.{k}"] for k in ("weight_packed", "weight_scale", "weight_global_scale")}
        got = NVFP4PackedCompressor.decompress(sd, scheme)["weight"]
        got = got.view(torch.int16).numpy().view(BF16)
        codes = unpack(sd["weight_packed"].numpy(), "float4_e2m1fn")
        mult = nvfp4.ct_multiplier_0d(sd["weight_scale"].view(torch.uint8).numpy(), g.item())
        assert bits_equal(nvfp4.dequantize(codes, mult).astype(BF16), got), m
        differ += int((got.astype(np.float32) != want.astype(np.float32)).sum())
        total += got.size
    # read through the converter, the weights are not ModelOpt's own: the bf16 multiplier moves
    # 861,731 of SmolLM2's 7,077,888 (12 %) by one bf16 step (compressed-tensors 0.20.1)
    assert differ > total // 100
