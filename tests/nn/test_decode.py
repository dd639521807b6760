"""The lean decode loop (nn/decode.py) gives transformers' greedy tokens and, step by step, the same logits
bit for bit: on a tiny random Llama (fast; quantized with several presets, dense bf16, GQA and not, every
ISA tier here) and on SmolLM2's deepseek-v3.1 checkpoint and dense bf16 model (slow, 32 tokens). The two
exactness claims the loop rests on are tested directly: a merged q/k/v or gate/up call equals the
separate calls bit for bit (blocks re-gridded where N is not on a block edge), and the lm_head screen
returns the full lm_head's argmax, ties to the lowest index included."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from fp8port import cpu
from fp8port.cpu import gemm
from fp8port.errors import UnsupportedInputError
from fp8port.nn import FP8Linear, fused, quantize_model
from fp8port.nn.decode import LeanDecoder, _Screen, merge, unsupported

transformers = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
needs_kernels = pytest.mark.skipif(not gemm.available(), reason="the C kernels are not built here")
TIERS = [t.value for t in cpu.tiers()]


FAMILIES = {  # (model class, config class, config fields): Qwen2 has q/k/v biases, Mistral a sliding window
    "llama": ("LlamaForCausalLM", "LlamaConfig", {}),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", {}),
    "mistral": ("MistralForCausalLM", "MistralConfig", {"sliding_window": 64}),
}


def _tiny(kv_heads=2, seed=0, vocab=512, dtype=torch.bfloat16, family="llama"):
    """A random 2-layer decoder: hidden 256, 4 heads of 64 (q 256, k / v 64 * kv_heads rows), MLP 384."""
    torch.manual_seed(seed)
    cls, cfg_cls, extra = FAMILIES[family]
    cfg = getattr(transformers, cfg_cls)(
        vocab_size=vocab,
        hidden_size=256,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        head_dim=64,
        max_position_embeddings=256,
        tie_word_embeddings=family == "llama",
        **extra,
    )
    m = getattr(transformers, cls)(cfg).to(dtype).eval()
    with torch.no_grad():  # larger weights than the init's (sharper, more varied logits), non-zero biases
        for p in m.parameters():
            p.mul_(4) if p.dim() == 2 else p.add_(torch.randn_like(p) * 0.5)
    return m


def _compare(model, steps=24, prompt=(1, 17, 99, 3, 250, 7, 42, 8, 300, 5, 11)):
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        ref = model.generate(
            ids,
            max_new_tokens=steps,
            min_new_tokens=steps,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    lean = LeanDecoder(model)
    got_logits = []
    got = lean.generate(ids, steps, stop_at_eos=False, logits_out=got_logits)
    assert torch.equal(got, ref.sequences)
    for i, (a, b) in enumerate(zip(ref.logits, got_logits)):
        assert torch.equal(a[0].float(), b), f"step {i}: logits differ"
    screened = lean.generate(ids, steps, stop_at_eos=False)  # the lm_head screen's tokens
    assert torch.equal(screened, ref.sequences)
    return lean


@needs_kernels
@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("preset", ["deepseek-v3.1", "mxfp4", "nvfp4"])
def test_quantized_tiny_llama_equals_generate(preset, tier):
    m = quantize_model(_tiny(), preset)
    with cpu.forced(tier):
        lean = _compare(m)
    merged = [L for L in lean.layers if L.qkv is not None and L.gateup is not None]
    assert len(merged) == len(lean.layers)  # every layer ran merged projections
    assert lean.screen is not None


@needs_kernels
def test_w8a8_model_equals_generate():
    """w8a8 layers run as modules (activations quantized per call): no merge, the same tokens and logits."""
    lean = _compare(quantize_model(_tiny(seed=6), "deepseek-v3.1", mode="w8a8"))
    assert all(L.qkv is None and L.gateup is None for L in lean.layers)


@pytest.mark.parametrize("kv_heads", [1, 4])
def test_dense_tiny_llama_equals_generate(kv_heads):
    _compare(_tiny(kv_heads=kv_heads, seed=kv_heads))


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_qwen2_and_mistral_equal_generate(family):
    _compare(_tiny(family=family))
    if gemm.available():
        _compare(quantize_model(_tiny(family=family, seed=5), "deepseek-v3.1"))


def test_mistral_past_its_sliding_window_is_refused():
    m = _tiny(family="mistral")
    assert unsupported(m, 64) is None
    assert "sliding window of 64" in unsupported(m, 65)
    with pytest.raises(UnsupportedInputError, match="sliding window"):
        LeanDecoder(m).generate(torch.tensor([[1, 2, 3]]), 62)


def test_float32_model_equals_generate():
    _compare(quantize_model(_tiny(dtype=torch.float32), "deepseek-v3.1") if gemm.available() else _tiny())


@needs_kernels
def test_eos_stops_like_generate():
    m = quantize_model(_tiny(seed=3), "deepseek-v3.1")
    ids = torch.tensor([[1, 5, 9, 200]])
    with torch.inference_mode():
        ref = m.generate(ids, max_new_tokens=12, do_sample=False)
    m.generation_config.eos_token_id = int(ref[0, ids.shape[1] + 3])  # the 4th new token ends the text
    with torch.inference_mode():
        ref = m.generate(ids, max_new_tokens=12, do_sample=False)
    got = LeanDecoder(m).generate(ids, 12)
    assert torch.equal(got, ref) and got.shape[1] <= ids.shape[1] + 4


@needs_kernels
@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("preset", ["deepseek-v3.1", "deepseek-v3", "mxfp8", "mxfp4", "nvfp4", "q8_0"])
def test_merged_projections_equal_separate_calls(preset, tier):
    """SmolLM2's q/k/v (576, 192, 192 rows: 128x128 blocks cut at 576 and 768) and gate/up, merged."""
    torch.manual_seed(1)
    for shapes, bias in (([(576, 576), (192, 576), (192, 576)], False), ([(1536, 576), (1536, 576)], True)):
        layers = [FP8Linear.from_linear(nn.Linear(k, n, bias=bias), preset) for n, k in shapes]
        sep_codes = [fl.codes.clone() for fl in layers]
        mg = merge(layers)
        assert mg is not None, preset
        for fl, c in zip(layers, sep_codes):  # the layers now read the merged codes: same bytes
            assert torch.equal(fl.codes, c)
        with cpu.forced(tier), torch.inference_mode():
            for dtype in (torch.bfloat16, torch.float32):
                # bf16 rows from FOLD_ROWS on may take a route whose scale split needs one NVFP4 tensor
                # scale per layer, which the merged grid lacks: merged layers serve the one-row decode step
                for m in (1, 2, 8) if dtype is torch.float32 else (1, fused.FOLD_ROWS - 1):
                    x = torch.randn(m, 576).to(dtype)
                    assert torch.equal(mg(x), torch.cat([fl(x) for fl in layers], -1)), (preset, dtype, m)


@needs_kernels
def test_merge_declines_what_is_not_exact():
    a = FP8Linear.from_linear(nn.Linear(256, 128), "deepseek-v3.1")
    b = FP8Linear.from_linear(nn.Linear(256, 128), "mxfp4")
    assert merge([a, b]) is None  # different schemes
    c = FP8Linear.from_linear(nn.Linear(256, 128, bias=False), "deepseek-v3.1")
    assert merge([a, c]) is None  # a bias on one only
    with fused.disabled():
        assert merge([a, FP8Linear.from_linear(nn.Linear(256, 64), "deepseek-v3.1")]) is None


def test_lm_head_rows_equal_the_full_call():
    """The screen computes candidate rows with F.linear on those rows alone: the full call's bits."""
    torch.manual_seed(2)
    w = (torch.randn(8192, 576) * 0.05).bfloat16()
    for threads in (1, 2):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for _ in range(10):
                x = (torch.randn(1, 576) * 3).bfloat16()
                full = nn.functional.linear(x, w)[0]
                for n in (1, 2, 7, 64, 1000):
                    idx = torch.randperm(w.shape[0])[:n].sort().values
                    assert torch.equal(nn.functional.linear(x, w.index_select(0, idx))[0], full[idx])
        finally:
            torch.set_num_threads(before)


@needs_kernels
def test_screen_gives_the_full_argmax_ties_included():
    torch.manual_seed(3)
    head = nn.Linear(576, 6000, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        head.weight.mul_(20)
        head.weight[4000] = head.weight[1234]  # duplicate rows: equal logits, argmax takes the first
        head.weight[5999] = head.weight[17]
    s = _Screen.make(head, torch.bfloat16)
    assert s is not None
    # int8 codes (one byte per weight) plus a float32 scale per 32 and one bound per row, about half of bf16
    assert s.q.resident_bytes() == 6000 * 576 + 6000 * 576 // 32 * 4
    s.proj.prepare(torch.bfloat16)
    for i in range(200):
        x = torch.randn(1, 1, 576).bfloat16()
        if i % 3 == 0:  # aim at a duplicated row, so the tie is the maximum
            x = (head.weight[1234 if i % 2 else 17].float() * 50).bfloat16().view(1, 1, -1)
        full = int(nn.functional.linear(x, head.weight)[0, 0].float().argmax())
        assert s.argmax(x) == full
    assert s.argmax(torch.full((1, 1, 576), float("nan")).bfloat16()) is None  # non-finite: the full lm_head


@needs_kernels
def test_screen_is_off_where_row_subsets_are_not_exact(monkeypatch):
    head = nn.Linear(256, 1000, bias=False).to(torch.bfloat16)
    assert _Screen.make(head, torch.bfloat16) is not None
    monkeypatch.setattr(_Screen, "_rows_exact", lambda self: False)
    assert _Screen.make(head, torch.bfloat16) is None
    assert _Screen.make(head.float(), torch.float32) is None  # float32 heads: the full lm_head


@needs_kernels
def test_sampling_is_seeded_and_top_k_1_is_greedy():
    m = quantize_model(_tiny(seed=4), "deepseek-v3.1")
    lean, ids = LeanDecoder(m), torch.tensor([[1, 2, 3, 4]])
    a = lean.generate(ids, 10, temperature=0.8, top_p=0.9, seed=7, stop_at_eos=False)
    b = lean.generate(ids, 10, temperature=0.8, top_p=0.9, seed=7, stop_at_eos=False)
    assert torch.equal(a, b)
    greedy = lean.generate(ids, 10, stop_at_eos=False)
    assert torch.equal(lean.generate(ids, 10, temperature=1.0, top_k=1, seed=1, stop_at_eos=False), greedy)


def test_unsupported_models_are_refused_with_a_reason():
    cfg = transformers.GPT2Config(n_layer=1, n_embd=64, n_head=2, vocab_size=100)
    g = transformers.GPT2LMHeadModel(cfg)
    assert "model_type 'gpt2'" in unsupported(g)
    with pytest.raises(UnsupportedInputError, match="gpt2"):
        LeanDecoder(g)
    m = _tiny()
    m.generation_config.repetition_penalty = 1.3
    assert "repetition_penalty" in unsupported(m)


def test_cli_json_reports_the_engine(tmp_path, capsys):
    """`fp8port run --json` says which engine ran, and both engines give the same greedy text."""
    import tokenizers

    from fp8port.cli.main import main

    m = _tiny()
    m.save_pretrained(tmp_path / "m")
    wl = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"w{i}": i for i in range(512)}, unk_token="w0"))
    wl.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    transformers.PreTrainedTokenizerFast(tokenizer_object=wl).save_pretrained(tmp_path / "m")
    texts = {}
    for engine in ("lean", "transformers"):
        args = ["run", str(tmp_path / "m"), "--prompt", "w5 w6 w7", "--max-new-tokens", "6", "--json"]
        assert main([*args, "--engine", engine]) == 0
        out = __import__("json").loads(capsys.readouterr().out)
        assert out["engine"] == engine
        # the lean loop's lm_head screen is memory beyond the weights, and reported as such
        lean = LeanDecoder(m) if engine == "lean" else None
        assert out["decoder_extra_bytes"] == (lean.extra_bytes() if lean else 0)
        texts[engine] = out["text"]
    assert texts["lean"] == texts["transformers"]


@pytest.mark.slow
def test_smollm2_32_tokens_equal_generate(tmp_path):
    """SmolLM2-135M: the deepseek-v3.1 checkpoint (fused kernels) and the dense bf16 model, 32 greedy tokens
    and every step's logits equal transformers' generate."""
    from fp8port.checkpoint import Options, run
    from fp8port.models import smollm2
    from fp8port.nn import load_quantized

    src = smollm2()
    run(src, tmp_path / "fp8", Options(mode="convert", preset="deepseek-v3.1"), progress=None)
    tok = transformers.AutoTokenizer.from_pretrained(src)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "Write a short story about a lighthouse keeper."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    q = load_quantized(tmp_path / "fp8", dtype=torch.bfloat16)
    _compare(q, steps=32, prompt=tuple(ids[0].tolist()))
    d = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    _compare(d, steps=32, prompt=tuple(ids[0].tolist()))
