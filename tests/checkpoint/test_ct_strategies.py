"""compressed-tensors float-quantized strategies we write (block, channel, tensor, group) are read back by
compressed-tensors itself, through transformers, as the values fp8port dequantizes."""

import json

import pytest

from fp8port.checkpoint import Checkpoint, Options, run

from .conftest import llama_folder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("compressed_tensors")


@pytest.fixture(scope="module")
def v3(tmp_path_factory):
    """A random tiny Llama as DeepSeek-V3 FP8 (float scales)."""
    root = tmp_path_factory.mktemp("ct")
    run(llama_folder(root / "bf16", seed=1), root / "v3", Options(mode="convert", preset="deepseek-v3"), progress=None)
    return root


@pytest.mark.parametrize(
    "block, strategy", [(None, "block"), ("row", "channel"), ("tensor", "tensor"), ("1x32", "group")]
)
def test_compressed_tensors_reads_every_strategy_we_write(v3, block, strategy):
    from transformers import CompressedTensorsConfig

    out = v3 / f"ct-{strategy}"
    res = run(
        v3 / "v3", out, Options(mode="convert", layout="compressed-tensors", block=block), progress=None, verify=True
    )
    assert res.summary["verify"]["ok"]
    # codes kept where the new blocks nest in the 128x128 ones (a 1x96 row does), else requantized
    kept = {n: res.summary["tensors"][n]["action"] == "replicate-scales" for n in res.summary["verify"]["tensors"]}
    for name, t in res.summary["verify"]["tensors"].items():
        assert t["exact"] == kept[name] and (kept[name] or t["sqnr_db"] > 20), (name, t)
    assert all(kept.values()) == (strategy in ("block", "group"))  # 160-wide rows straddle two blocks
    args = json.loads((out / "config.json").read_text())["quantization_config"]["config_groups"]["group_0"]["weights"]
    assert args["strategy"] == strategy
    scale = Checkpoint.open(out).info("model.layers.0.mlp.down_proj.weight_scale").shape
    assert scale == {"block": (1, 2), "channel": (96, 1), "tensor": (1,), "group": (96, 5)}[strategy]
    run(out, v3 / f"deq-{strategy}", Options(mode="dequant", dtype="fp32"), progress=None)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        out, dtype=torch.float32, quantization_config=CompressedTensorsConfig(dequantize=True)
    ).state_dict()
    ours = transformers.AutoModelForCausalLM.from_pretrained(v3 / f"deq-{strategy}", dtype=torch.float32).state_dict()
    assert [k for k in ours if not torch.equal(theirs[k], ours[k])] == []
