"""load_quantized and `fp8port run` on SmolLM2 (its first two layers, real BF16 weights) from every layout
that holds a dense model's linears: the logits equal those of the model fp8port dequantizes. For the
compressed-tensors NVFP4 / MXFP4 / MXFP8 and ModelOpt NVFP4 layouts FP8Linear also holds the layout's
codes, NVFP4 multipliers in the layout's own convention (s / g, or s * p) and MX 1x32 E8M0 scales.
(gpt-oss holds MoE experts only: tests/checkpoint/test_gpt_oss.py; GGUF runs in llama.cpp.)"""

import json

import numpy as np
import pytest
import torch

from fp8port.checkpoint import Checkpoint, Options, run
from fp8port.cli.main import main
from fp8port.nn import FP8Linear, load_quantized
from fp8port.quant import nvfp4
from fp8port.quant.storage import e8m0_values

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

DOWN = "model.layers.1.mlp.down_proj"
LAYOUTS = {
    "ct-nvfp4": {"preset": "ct-nvfp4"},
    "ct-mxfp4": {"preset": "ct-mxfp4"},
    "ct-mxfp8": {"preset": "ct-mxfp8"},
    "modelopt": {"preset": "nvfp4", "layout": "modelopt"},
}
OTHER_LAYOUTS = {
    "deepseek": {"preset": "deepseek-v3.1"},
    "compressed-tensors": {"preset": "deepseek-v3", "layout": "compressed-tensors"},
    "fp8port": {"preset": "hif8"},
    "ascend": {"preset": "W8A8_MXFP8", "layout": "ascend"},
    "deepseek-v4": {"preset": "deepseek-v4"},
}


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    from tests.peers.oracles import smollm2_layers

    return smollm2_layers(2), tmp_path_factory.mktemp("smol-mx")


def _multiplier(folder, name: str) -> np.ndarray:
    """A weight's block multipliers computed from its files in the layout's own convention."""
    ck = Checkpoint.open(folder)
    s = ck.read(name + ".weight_scale").view(np.uint8)
    if name + ".weight_global_scale" in ck.tensors:
        return nvfp4.ct_multiplier(s, ck.read(name + ".weight_global_scale")[0])
    if name + ".weight_scale_2" in ck.tensors:
        return nvfp4.modelopt_multiplier(s, ck.read(name + ".weight_scale_2"))
    return e8m0_values(s)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_runs_from_each_layout(smol, name, capsys):
    src, root = smol
    q, deq = root / name, root / f"{name}-deq"
    run(src, q, Options(mode="convert", **LAYOUTS[name]), progress=None)
    run(q, deq, Options(mode="dequant", dtype="fp32"), progress=None)
    model = load_quantized(q, dtype=torch.float32)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, FP8Linear)}
    assert len(layers) == 14
    lin = layers[DOWN]
    assert lin.scheme.block.size == ((16,) if "nvfp4" in name or name == "modelopt" else (32,))
    assert lin.scheme.storage.value == ("e4m3_tensor" if lin.scheme.block.size == (16,) else "e8m0")
    assert np.array_equal(lin.scale_fp32.numpy(), _multiplier(q, DOWN))
    _same_logits_and_runs(model, q, deq, capsys)


def _same_logits_and_runs(model, q, deq, capsys):
    ids = torch.arange(1, 17).reshape(1, -1)  # 16 rows: the prefill path, exact against the dequantized model
    ref = transformers.AutoModelForCausalLM.from_pretrained(deq, dtype=torch.float32)
    with torch.inference_mode():
        assert torch.equal(model(ids).logits, ref(ids).logits)
    assert main(["run", str(q), "--prompt", "Hi", "--max-new-tokens", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["new_tokens"] == 3


@pytest.mark.parametrize("name", sorted(OTHER_LAYOUTS))
def test_runs_from_every_other_layout(smol, name, capsys):
    src, root = smol
    q, deq = root / name, root / f"{name}-deq"
    run(src, q, Options(mode="convert", **OTHER_LAYOUTS[name]), progress=None)
    run(q, deq, Options(mode="dequant", dtype="fp32"), progress=None)
    model = load_quantized(q, dtype=torch.float32)
    assert sum(isinstance(m, FP8Linear) for m in model.modules()) == 14
    _same_logits_and_runs(model, q, deq, capsys)
