"""load_quantized reads every readable layout through the registry: the same codes give the same logits."""

import pytest
import torch

from fp8port.checkpoint import Options, run
from fp8port.nn import FP8Linear, load_quantized
from tests.checkpoint.conftest import llama_folder

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny Llama as DeepSeek UE8M0 FP8 in 64x64 blocks (partial blocks on 96 and 160)."""
    root = tmp_path_factory.mktemp("tiny")
    run(
        llama_folder(root / "bf16"),
        root / "deepseek",
        Options(mode="convert", preset="deepseek-v3.1", block="64x64"),
        progress=None,
    )
    return root, torch.arange(20).reshape(1, 20)


def _logits(folder, ids, **kw):
    model = load_quantized(folder, dtype=torch.float32, **kw)
    assert sum(isinstance(m, FP8Linear) for m in model.modules()) == 14  # 2 layers x 7 projections
    with torch.inference_mode():
        return model(ids).logits


@pytest.mark.parametrize("layout", ["compressed-tensors", "fp8port", "ascend", "deepseek-v4"])
def test_relaid_out_checkpoints_run_like_the_source(tiny, layout):
    root, ids = tiny
    kw = {"preset": "W8A8_MXFP8", "block": None} if layout == "ascend" else {}
    run(root / "deepseek", root / layout, Options(mode="convert", layout=layout, **kw), progress=None, verify=True)
    assert torch.equal(_logits(root / layout, ids), _logits(root / "deepseek", ids))


def test_ascend_int8_loads_as_its_dequantized_model(tiny):
    root, ids = tiny
    run(root / "bf16", root / "w8a16", Options(mode="convert", layout="ascend", preset="W8A16"), progress=None)
    run(root / "w8a16", root / "deq", Options(mode="dequant", dtype="fp32"), progress=None)
    ref = transformers.AutoModelForCausalLM.from_pretrained(root / "deq", dtype=torch.float32)
    with torch.inference_mode():
        want = ref(ids).logits
    assert torch.allclose(_logits(root / "w8a16", ids), want, rtol=0, atol=1e-5 * want.abs().max().item())
