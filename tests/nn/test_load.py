"""load_quantized on SmolLM2 (deepseek-v3.1 and others): logits, generation, memory."""

import json
import os

import pytest
import torch

from fp8port.checkpoint import Options, run
from fp8port.nn import FP8Linear, load_quantized, resident_bytes

transformers = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    from fp8port.models import smollm2

    out = tmp_path_factory.mktemp("load")
    run(smollm2(), out / "fp8", Options(mode="convert", preset="deepseek-v3.1"), progress=None)
    run(out / "fp8", out / "deq", Options(mode="dequant", dtype="fp32"), progress=None)
    run(smollm2(), out / "mx4", Options(mode="convert", preset="mxfp4"), progress=None)
    tok = transformers.AutoTokenizer.from_pretrained(out / "fp8")
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    return out, tok, ids


def test_weight_only_logits_equal_the_dequantized_model(smol):
    out, _, ids = smol
    q = load_quantized(out / "fp8", dtype=torch.float32)
    d = transformers.AutoModelForCausalLM.from_pretrained(out / "deq", dtype=torch.float32)
    assert sum(isinstance(m, FP8Linear) for m in q.modules()) == 210
    with torch.inference_mode():
        lq, ld = q(ids).logits, d(ids).logits
    assert torch.allclose(lq, ld, rtol=0, atol=1e-4 * ld.abs().max().item())  # fp32 tolerance (here: equal)


def test_generates_coherent_text_and_halves_weight_memory(smol):
    out, tok, ids = smol
    q = load_quantized(out / "fp8")
    with torch.inference_mode():
        gen = q.generate(ids, max_new_tokens=12, do_sample=False)
    text = tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True)
    assert "Paris" in text
    mem = resident_bytes(q)
    fp8_params = sum(m.codes.numel() for m in q.modules() if isinstance(m, FP8Linear))
    assert mem["fp8_layers"] < 0.51 * 2 * fp8_params  # codes + scales vs the same weights in bf16


def test_w8a8_gap_is_measured(smol):
    out, _, ids = smol
    d = transformers.AutoModelForCausalLM.from_pretrained(out / "deq", dtype=torch.float32)
    w = load_quantized(out / "fp8", mode="w8a8", dtype=torch.float32)
    with torch.inference_mode():
        lw, ld = w(ids).logits, d(ids).logits
    gap = (lw - ld).abs().max().item() / ld.abs().max().item()
    assert 0 < gap < 0.3
    assert (lw[0, -1].argmax() == ld[0, -1].argmax()).item()  # same next token


def test_mx_checkpoints_transformers_cannot_load(smol):
    out, tok, ids = smol
    m = load_quantized(out / "mx4")
    assert any(isinstance(x, FP8Linear) and x.scheme.element.name == "float4_e2m1fn" for x in m.modules())
    with torch.inference_mode():
        assert torch.isfinite(m(ids).logits).all()


def test_deepseek_v4_layout_runs_smollm2(smol, capsys):
    """SmolLM2 written in DeepSeek-V4's layout (its own names, E8M0 `.scale` tensors; no experts, so every
    weight FP8): the same codes as deepseek-v3.1, the same logits, and `fp8port run` generates from it."""
    from fp8port.cli.main import main
    from fp8port.models import smollm2

    out, _, ids = smol
    res = run(smollm2(), out / "v4", Options(mode="convert", preset="deepseek-v4"), progress=None, verify=True)
    assert res.summary["layout_out"] == "deepseek-v4" and res.summary["counts"]["quantize"] == 210
    with torch.inference_mode():
        assert torch.equal(
            load_quantized(out / "v4", dtype=torch.float32)(ids).logits,
            load_quantized(out / "fp8", dtype=torch.float32)(ids).logits,
        )
    assert (
        main(
            [
                "run",
                str(out / "v4"),
                "--prompt",
                "What is the capital of France? Answer in one sentence.",
                "--max-new-tokens",
                "12",
                "--json",
            ]
        )
        == 0
    )
    assert "Paris" in json.loads(capsys.readouterr().out)["text"]
