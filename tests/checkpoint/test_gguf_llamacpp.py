"""llama.cpp (llama-cpp-python 0.3.36, its own venv: tests/peers/requirements/llamacpp.txt) as the judge of
the GGUF files fp8port writes: it loads them, tokenizes as transformers does, computes the same logits,
generates the same greedy tokens, and its own quantizer writes the same Q8_0 bytes. The driver script
(tests/peers/llamacpp_driver.py) runs in that venv and imports nothing of fp8port."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fp8port.checkpoint import Checkpoint, Options, run

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

DRIVER = Path(__file__).resolve().parents[1] / "peers" / "llamacpp_driver.py"
PROMPTS = [
    "What is the capital of France? Answer in one sentence.",
    "Explain in two sentences why the sky is blue.",
    "Write a short poem about the sea.",
]
TEXTS = [
    "Hello world! It's 2026: 12345 apples cost $3.50 (or €3,20).\n\n  indented\tline",
    "Don't we'LL see? I'M sure they've 1000000 ideas, naïve café Zürich 東京 😀.",
    "def f(x):\n    return x**2  # 42\r\n",
]


@pytest.fixture(scope="module")
def judge(peer):
    py = peer("llamacpp")

    def ask(request: dict, tmp: Path) -> dict:
        req = tmp / f"req-{len(list(tmp.glob('req-*')))}.json"
        req.write_text(json.dumps(request))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        r = subprocess.run([str(py), str(DRIVER), str(req)], capture_output=True, text=True, timeout=900, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout)

    return ask


def _gguf(src, dst, t, **kw):
    res = run(src, dst, Options(mode="convert", layout="gguf", type=t, **kw), progress=None)
    return res


def _tiny(folder: Path, arch: str, **kw) -> Path:
    """A random 2-layer model of `arch` with SmolLM2's tokenizer (vocab 49152), saved in float32."""
    from fp8port.models import smollm2

    cls = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3"}[arch]
    cfg = getattr(transformers, f"{cls}Config")(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=49152,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        **kw,
    )
    torch.manual_seed(0)
    model = getattr(transformers, f"{cls}ForCausalLM")(cfg)
    with torch.no_grad():  # weights large enough for logits that differ clearly between tokens
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.2)
    model.save_pretrained(folder)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (folder / f).write_bytes((smollm2() / f).read_bytes())
    return folder


@pytest.mark.parametrize("arch, kw", [("llama", {}), ("mistral", {}), ("qwen2", {}), ("qwen3", {"head_dim": 32})])
def test_llama_cpp_computes_the_logits_transformers_computes(arch, kw, judge, tmp_path):
    """Every architecture fp8port writes GGUF metadata for: llama.cpp's logits of our F32 file equal
    transformers' of the source (hyperparameters, tensor names, q/k row order, Qwen2's biases, Qwen3's
    q/k norms and wide heads)."""
    src = _tiny(tmp_path / arch, arch, **kw)
    _gguf(src, tmp_path / "m.gguf", "f32")
    ids = [int(i) for i in np.random.default_rng(0).integers(0, 49152, 48)]
    got = np.load(
        judge(
            {"model": str(tmp_path / "m.gguf"), "n_ctx": 64, "rows": [ids], "logits_out": str(tmp_path / "logits.npy")},
            tmp_path,
        )["logits_out"]
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].double().numpy()
    assert want.std() > 1  # the check has teeth: logits spread over several units
    # llama.cpp keeps K and V in fp16: 0.2 % of the largest logit here; a wrong row order or
    # hyperparameter moves logits by whole units
    assert np.abs(got - want).max() < 0.01 * np.abs(want).max(), np.abs(got - want).max()
    assert np.mean(got.argmax(-1) == want.argmax(-1)) > 0.9


def test_q8_0_bytes_equal_llama_cpps_own_quantizer(judge, tmp_path):
    """llama.cpp's `llama_model_quantize` (what llama-quantize runs) of our F32 file writes the Q8_0
    blocks our q8_0 scheme writes, byte for byte, ties included."""
    src = _tiny(tmp_path / "llama", "llama")
    from safetensors.torch import load_file, save_file

    sd = load_file(src / "model.safetensors")
    sd["model.layers.0.mlp.up_proj.weight"][0, :6] = torch.tensor([127, -2.5, 2.5, 0.5, -0.5, 1.5])
    sd["model.layers.0.mlp.up_proj.weight"][0, 6:32] = 0  # d = 1: x / d at exact ties
    sd["model.layers.1.mlp.down_proj.weight"][3, 32:64] = 0  # an all-zero block
    save_file(sd, src / "model.safetensors", metadata={"format": "pt"})
    _gguf(src, tmp_path / "f32.gguf", "f32")
    _gguf(src, tmp_path / "ours.gguf", "q8_0")
    judge({"quantize": [str(tmp_path / "f32.gguf"), str(tmp_path / "theirs.gguf"), "MOSTLY_Q8_0"]}, tmp_path)
    ours, theirs = Checkpoint.open(tmp_path / "ours.gguf"), Checkpoint.open(tmp_path / "theirs.gguf")
    linears = [n for n in ours.tensors if n.startswith("blk.") and ours.info(n).dtype == "Q8_0"]
    assert len(linears) == 14
    for n in linears:
        assert theirs.info(n).dtype == "Q8_0", n
        assert np.array_equal(ours.read_raw(n), theirs.read_raw(n)), n


@pytest.mark.parametrize("pre", ["gpt-2", "smollm", "llama-bpe", "qwen2"])
def test_llama_cpp_tokenizes_as_tokenizers_does(pre, judge, tmp_path):
    """Each pre-tokenizer structure fp8port maps runs in llama.cpp under the name we write and splits text
    exactly as the `tokenizers` library does with that tokenizer.json (SmolLM2's vocabulary and merges)."""
    from tokenizers import Tokenizer

    from fp8port.checkpoint.layouts.gguf.tokenizer import PRE_TOKENIZERS

    src = _tiny(tmp_path / "m", "llama")
    tok = json.loads((src / "tokenizer.json").read_text())
    steps = [
        {"add_prefix_space": False, "trim_offsets": True, **s}
        if s["type"] == "ByteLevel"
        else {"invert": False, **s}
        if s["type"] == "Split"
        else s
        for s in PRE_TOKENIZERS[pre]
    ]
    tok["pre_tokenizer"] = steps[0] if len(steps) == 1 else {"type": "Sequence", "pretokenizers": steps}
    (src / "tokenizer.json").write_text(json.dumps(tok))
    res = _gguf(src, tmp_path / "m.gguf", "f32")
    assert ("tokenizer.ggml.pre", pre, None) in res.plan.writer.metadata
    got = judge({"model": str(tmp_path / "m.gguf"), "n_ctx": 64, "tokenize": TEXTS}, tmp_path)["tokens"]
    hf = Tokenizer.from_file(str(src / "tokenizer.json"))
    assert got == [hf.encode(t).ids for t in TEXTS]


@pytest.fixture(scope="module")
def smol_sources(tmp_path_factory):
    from fp8port.models import smollm2

    out = tmp_path_factory.mktemp("sources")
    src = smollm2()
    run(src, out / "deepseek-v3.1", Options(mode="convert", preset="deepseek-v3.1"), progress=None)
    run(src, out / "mxfp4", Options(mode="convert", preset="mxfp4"), progress=None)
    return {"bf16": src, "deepseek-v3.1": out / "deepseek-v3.1", "mxfp4": out / "mxfp4"}


def _chat_ids(tok):
    texts = [
        tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in PROMPTS
    ]
    return texts, [tok(t)["input_ids"] for t in texts]


def _greedy(model, ids, n=32):
    with torch.no_grad():
        return [model.generate(torch.tensor([i]), do_sample=False, max_new_tokens=n)[0, len(i) :].tolist() for i in ids]


# Where llama.cpp's greedy tokens leave transformers' (bf16 model), the two must agree for this many
# tokens first, and llama.cpp's token must be a near-tie in transformers' logits at that step: within
# NEAR_TIE of the top logit. llama.cpp keeps the residual stream in float32 and its bf16 dot products
# differ by CPU (AVX-512 BF16, AMX), so a near-tie can fall either way; a wrong file moves far more.
AGREE_FIRST, NEAR_TIE = 8, 0.25


def _same_or_near_tie(model, prompt, ours, theirs, tok):
    d = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
    if d is None:
        assert len(theirs) == len(ours), (tok.decode(ours), tok.decode(theirs))
        return
    assert d >= AGREE_FIRST, (d, tok.decode(ours), tok.decode(theirs))
    with torch.no_grad():
        logits = model(torch.tensor([prompt + ours[:d]])).logits[0, -1].float()
    gap = float(logits.max() - logits[theirs[d]])
    assert gap <= NEAR_TIE, (d, gap, tok.decode(ours), tok.decode(theirs))


@pytest.mark.slow
@pytest.mark.parametrize("source", ["bf16", "deepseek-v3.1", "mxfp4"])
def test_smollm2_ggufs_load_and_generate_in_llama_cpp(source, smol_sources, judge, tmp_path):
    """SmolLM2 from its BF16 folder and from our deepseek-v3.1 and mxfp4 checkpoints, as GGUF bf16, q8_0
    and mxfp4: llama.cpp loads each, tokenizes the chat prompts as transformers does, and generates.
    From the BF16 folder's bf16 GGUF, the first 32 greedy tokens on three chat prompts equal those of the
    dense model in our runtime (transformers, bf16), or leave them after AGREE_FIRST tokens at a near-tie
    (seen on a Xeon with AMX: token 21 of 32, on a comma). (The bf16 GGUFs of the FP8 / FP4 checkpoints hold
    their dequantized values exactly, which --verify checks; their greedy tokens are not compared:
    llama.cpp keeps the residual stream in float32 where transformers' bf16 model rounds it, so near-ties
    may resolve differently.)"""
    src = smol_sources[source]
    tok = transformers.AutoTokenizer.from_pretrained(smol_sources["bf16"])
    texts, ids = _chat_ids(tok)
    for t in ("bf16", "q8_0", "mxfp4"):
        res = run(
            src, tmp_path / f"{t}.gguf", Options(mode="convert", layout="gguf", type=t), progress=None, verify=True
        )
        assert res.summary["verify"]["ok"]
        if t == "bf16" or (source == "mxfp4" and t == "mxfp4"):  # lossless: every value kept
            assert res.summary["counts"]["requantize"] == res.summary["counts"]["quantize"] == 0
            assert all(v["exact"] for v in res.summary["verify"]["tensors"].values())
        got = judge(
            {
                "model": str(tmp_path / f"{t}.gguf"),
                "tokenize": texts,
                "generate": ids,
                "new_tokens": 32,
                "eos": tok.eos_token_id,
            },
            tmp_path,
        )
        assert got["tokens"] == ids  # llama.cpp's tokenizer (our metadata) equals transformers'
        assert all(len(g) >= 4 for g in got["generated"]), (t, got["generated"])
        if source == "bf16" and t == "bf16":
            model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).eval()
            for prompt, ours, theirs in zip(ids, _greedy(model, ids), got["generated"], strict=True):
                _same_or_near_tie(model, prompt, ours, theirs, tok)
        (tmp_path / f"{t}.gguf").unlink()  # 100-270 MB each
