"""A Hugging Face tokenizer folder as GGUF metadata: llama.cpp's `gpt2` (byte-level BPE) model.

Tokens, types and merges come from tokenizer.json; special token ids, add-BOS/EOS and the chat
template through the gguf package's `SpecialVocab`. llama.cpp does not read the pre-tokenizer from the
file: it runs one it has compiled in, named by `tokenizer.ggml.pre`. `PRE_TOKENIZERS` maps the
tokenizer.json structures whose splitting equals one of llama.cpp's (tests/checkpoint/test_gguf_llamacpp.py
tokenizes the same text with `tokenizers` and with llama.cpp); any other structure is a typed error.
"""

from __future__ import annotations

import json
from pathlib import Path

from ....errors import LayoutError

GPT2 = {"type": "ByteLevel", "use_regex": True}
DIGITS = {"type": "Digits", "individual_digits": True}
BYTES = {"type": "ByteLevel", "use_regex": False}
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")
# llama.cpp pre-tokenizer name -> the tokenizer.json pre_tokenizer steps it reproduces (keys that matter)
PRE_TOKENIZERS = {
    "gpt-2": [GPT2],
    "smollm": [DIGITS, GPT2],
    "llama-bpe": [{"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated"}, BYTES],
    "qwen2": [{"type": "Split", "pattern": {"Regex": QWEN2_REGEX}, "behavior": "Isolated"}, BYTES],
}
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5  # llama.cpp token types


def _steps(pre: dict | None) -> list[dict]:
    if not pre:
        return []
    return list(pre.get("pretokenizers") or []) if pre.get("type") == "Sequence" else [pre]


def pre_tokenizer(tok: dict, where) -> str:
    """llama.cpp's name for tokenizer.json's pre-tokenizer (typed error where it has none)."""
    steps = _steps(tok.get("pre_tokenizer"))
    for name, want in PRE_TOKENIZERS.items():
        if len(steps) == len(want) and all(all(s.get(k) == v for k, v in w.items()) for s, w in zip(steps, want)):
            return name
    raise LayoutError(
        f"{where}: pre_tokenizer {json.dumps(tok.get('pre_tokenizer'))[:200]} matches none that "
        f"llama.cpp runs and fp8port maps ({', '.join(PRE_TOKENIZERS)})"
    )


def tokenizer(root: Path, vocab_size: int) -> list:
    """The tokenizer.* metadata [(key, value, GGUFValueType)] of a model folder."""
    import gguf

    where = root / "tokenizer.json"
    try:
        tok = json.loads(where.read_text(encoding="utf-8"))
        model = tok["model"]
    except (OSError, ValueError, KeyError, TypeError):
        raise LayoutError(f"{where}: missing or not a tokenizer.json; GGUF needs the tokenizer") from None
    if (
        model.get("type") != "BPE"
        or model.get("byte_fallback")
        or (tok.get("decoder") or {}).get("type") != "ByteLevel"
    ):
        raise LayoutError(
            f"{where}: a {model.get('type')} tokenizer (byte_fallback {model.get('byte_fallback')}); "
            "fp8port writes byte-level BPE tokenizers (llama.cpp's gpt2 model) only"
        )
    pre = pre_tokenizer(tok, where)
    tokens = {int(i): t for t, i in model["vocab"].items()}
    types = dict.fromkeys(tokens, NORMAL)
    for a in tok.get("added_tokens") or []:
        tokens[int(a["id"])] = a["content"]
        types[int(a["id"])] = CONTROL if a.get("special") else USER_DEFINED
    if max(tokens) >= vocab_size:
        raise LayoutError(f"{where}: token id {max(tokens)} is beyond config.json's vocab_size {vocab_size}")
    # llama.cpp pads the token list to the embedding's rows, as its converter does
    ids = range(vocab_size)
    T = gguf.GGUFValueType
    K = gguf.Keys.Tokenizer
    kv = [
        (K.MODEL, "gpt2", None),
        (K.PRE, pre, None),
        (K.LIST, [tokens.get(i, f"[PAD{i}]") for i in ids], None),
        (K.TOKEN_TYPE, [types.get(i, UNUSED) for i in ids], T.INT32),
    ]
    special = gguf.SpecialVocab(root, load_merges=True, n_vocab=vocab_size)
    if not special.merges:
        raise LayoutError(f"{where}: no merges; a BPE tokenizer needs them")
    kv.append((K.MERGES, list(special.merges), None))
    for typ, tid in special.special_token_ids.items():
        key = getattr(K, f"{typ.upper()}_ID", None)
        if key:
            kv.append((key, int(tid), T.UINT32))
    adds = _adds(tok)
    adds.update({k: v for k, v in special.add_special_token.items() if k in ("bos", "eos")})
    kv += [(K.ADD_BOS, adds["bos"], T.BOOL), (K.ADD_EOS, adds["eos"], T.BOOL)]
    if isinstance(special.chat_template, str):
        kv.append((K.CHAT_TEMPLATE, special.chat_template, None))
    return kv


def _adds(tok: dict) -> dict[str, bool]:
    """Whether encoding adds a BOS / EOS, from tokenizer.json's post-processor (llama.cpp must be told
    explicitly: its default for BPE models differs between versions)."""
    post = tok.get("post_processor") or {}
    procs = post.get("processors", [post]) if post.get("type") == "Sequence" else [post]
    single = next((p.get("single") or [] for p in procs if p.get("type") == "TemplateProcessing"), [])
    return {"bos": bool(single) and "SpecialToken" in single[0], "eos": bool(single) and "SpecialToken" in single[-1]}
