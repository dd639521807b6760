import hashlib
import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from fp8port.checkpoint.safetensors_io import Entry, write_file

BF16 = ml_dtypes.bfloat16


def tiny_llama(rng, hidden=576, inter=1536, layers=2, vocab=100, dtype=BF16) -> dict[str, np.ndarray]:
    """A Llama-shaped set of tensors with SmolLM2's ragged widths (576 = 4.5 x 128)."""
    t = {"model.embed_tokens.weight": rng.standard_normal((vocab, hidden))}
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = rng.standard_normal(hidden)
        t[p + "self_attn.q_proj.weight"] = rng.standard_normal((hidden, hidden))
        t[p + "self_attn.k_proj.weight"] = rng.standard_normal((192, hidden))
        t[p + "mlp.gate_proj.weight"] = rng.standard_normal((inter, hidden)) * np.exp(rng.standard_normal((inter, 1)))
        t[p + "mlp.down_proj.weight"] = rng.standard_normal((hidden, inter))
        t[p + "mlp.gate.weight"] = rng.standard_normal((8, hidden))  # a MoE router: stays dense
    t["model.norm.weight"] = rng.standard_normal(hidden)
    t["lm_head.weight"] = rng.standard_normal((vocab, hidden))
    return {k: v.astype(dtype) for k, v in t.items()}


_DT = {np.dtype(BF16): "BF16", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}


def write_dense(folder: Path, tensors: dict, shards: int = 1, config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    groups = [names[i::shards] for i in range(shards)]
    weight_map = {}
    for i, group in enumerate(groups):
        fname = "model.safetensors" if shards == 1 else f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        write_file(
            folder / fname,
            [Entry(n, _DT[tensors[n].dtype], tensors[n].shape, lambda a=tensors[n]: a) for n in group],
            {"format": "pt"},
        )
        weight_map.update({n: fname for n in group})
    if shards > 1:
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(
        json.dumps(config or {"architectures": ["LlamaForCausalLM"], "hidden_size": 576, "torch_dtype": "bfloat16"})
    )
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    return folder


def llama_folder(folder: Path, seed: int = 0) -> Path:
    """A random 2-layer transformers Llama with 96-wide layers (partial 128-blocks), saved as BF16."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        hidden_size=96,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=64,
    )
    transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(folder)
    return folder


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file below folder (relative names), to prove a folder unchanged."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def dense(tmp_path, rng):
    tensors = tiny_llama(rng)
    return write_dense(tmp_path / "src", tensors, shards=2), tensors


def gpt_oss_folder(folder: Path, seed: int = 0, layers: int = 2, experts: int = 4) -> Path:
    """A random tiny transformers GptOss (MoE: experts [E, H, 2I] / [E, I, H], 64 wide), saved as BF16."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.GptOssConfig(
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_local_experts=experts,
        num_experts_per_tok=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=128,
        max_position_embeddings=256,
        layer_types=["full_attention"] * layers,
    )
    transformers.GptOssForCausalLM(cfg).to(torch.bfloat16).save_pretrained(folder)
    return folder


def tiny_moe(rng, experts: int = 2, hidden: int = 64, inter: int = 128) -> dict[str, np.ndarray]:
    """tiny_llama plus MoE experts in both forms: gpt-oss's stacked 3-D `mlp.experts.gate_up_proj`
    [E, H, 2I] / `down_proj` [E, I, H] with biases, and per-expert 2-D `mlp.experts.E.gate_proj.weight`."""
    t = tiny_llama(rng, hidden=hidden, inter=inter, layers=1, vocab=16)
    p = "model.layers.0.mlp.experts."
    t[p + "gate_up_proj"] = rng.standard_normal((experts, hidden, 2 * inter))
    t[p + "gate_up_proj_bias"] = rng.standard_normal((experts, 2 * inter))
    t[p + "down_proj"] = rng.standard_normal((experts, inter, hidden))
    for e in range(experts):
        t[f"{p}{e}.gate_proj.weight"] = rng.standard_normal((inter, hidden))
        t[f"{p}{e}.down_proj.weight"] = rng.standard_normal((hidden, inter))
    return {k: v.astype(BF16) for k, v in t.items()}
