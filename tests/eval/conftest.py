"""A tiny causal LM with a tokenizer of its own, and its block-FP8 checkpoint, for evaluating checkpoints in
seconds. Widths 128 / 320 / 64 make DeepGEMM run some linears and not others, and give transformers' CPU
loader a ceil grid it refuses (320 in 3 blocks), as on SmolLM2."""

import json
from pathlib import Path

import pytest

WORDS = (
    "the",
    "of",
    "to",
    "and",
    "a",
    "in",
    "or",
    "is",
    "that",
    "any",
    "this",
    "for",
    "by",
    "you",
    "be",
    "with",
    "software",
    "license",
    "program",
    "work",
    "not",
    "may",
    "as",
    "on",
    "are",
    "copyright",
)


def tiny_lm(folder: Path, seed: int = 0, hidden: int = 128) -> Path:
    """A random 2-layer Llama (BF16) with a word-level tokenizer over 28 ids, saved to `folder`."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        hidden_size=hidden,
        intermediate_size=320,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(WORDS) + 2,
        max_position_embeddings=128,
        eos_token_id=1,
        bos_token_id=1,
        tie_word_embeddings=False,
    )
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():  # spread magnitudes over rows so blocks differ
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(torch.exp(torch.randn(p.shape[0], 1)))
    model.to(torch.bfloat16).save_pretrained(folder)
    return save_tokenizer(folder)


def save_tokenizer(folder: Path) -> Path:
    """A word-level tokenizer over WORDS (ids 0 to 27, eos 1) saved beside a model."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "</s>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(dense folder, its deepseek-v3 checkpoint: float32 128x128 scales)."""
    from fp8port.checkpoint import Options, run

    root = tmp_path_factory.mktemp("tiny-lm")
    dense = tiny_lm(root / "bf16")
    run(dense, root / "v3", Options(mode="convert", preset="deepseek-v3"), progress=None)
    assert json.loads((root / "v3" / "config.json").read_text())["quantization_config"]["quant_method"] == "fp8"
    return dense, root / "v3"


EVAL = dict(max_tokens=48, seq_len=16, sensitivity_layers=2, progress=None)
ALL_ENGINES = "vllm-sm100,sglang-sm100,vllm-ascend-950,vllm-ascend-a2,transformers-cpu,gguf-q8_0"


@pytest.fixture(scope="session")
def tiny_report(tiny, tmp_path_factory):
    """The tiny checkpoint evaluated against its original, as stored and as every engine, with its report."""
    from fp8port.eval.checkpoint import evaluate_checkpoint

    dense, v3 = tiny
    out = tmp_path_factory.mktemp("tiny-report")
    return evaluate_checkpoint(v3, reference=dense, engines=ALL_ENGINES, report_dir=out, **EVAL), out
