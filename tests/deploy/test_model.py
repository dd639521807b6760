"""Reading config.json: tensor names and shapes as in HF checkpoints; typed errors."""

import json

import pytest

from fp8port.deploy import ModelConfigError, TensorUse, load_model


def test_deepseek_v3_tensor_names():
    ds = load_model("deepseek-v3")
    t = {x.name: x for x in ds.tensors(include_mtp=True)}
    assert t["model.layers.0.self_attn.kv_a_proj_with_mqa.weight"].shape == (576, 7168)
    assert t["model.layers.0.self_attn.kv_b_proj.weight"].shape == (32768, 512)
    assert t["model.layers.2.mlp.down_proj.weight"].shape == (7168, 18432)
    assert "model.layers.3.mlp.gate_proj.weight" not in t  # layer 3 is the first MoE layer
    assert t["model.layers.3.mlp.experts.255.down_proj.weight"].shape == (7168, 2048)
    assert t["model.layers.3.mlp.experts.255.down_proj.weight"].role is TensorUse.EXPERT
    assert t["model.layers.60.mlp.shared_experts.up_proj.weight"].role is TensorUse.LINEAR
    assert t["model.layers.3.mlp.gate.weight"].role is TensorUse.DENSE
    assert t["model.layers.3.mlp.gate.e_score_correction_bias"].dense_bytes == 4
    assert t["model.layers.61.eh_proj.weight"].shape == (7168, 14336) and t["model.layers.61.eh_proj.weight"].mtp
    assert t["lm_head.weight"].role is TensorUse.HEAD
    assert "model.layers.61.self_attn.q_a_proj.weight" not in {x.name for x in ds.tensors()}


def test_folder_and_file(tmp_path):
    cfg = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "vocab_size": 10,
        "tie_word_embeddings": True,
        "attention_bias": True,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    m = load_model(tmp_path)
    assert m.name == tmp_path.name and load_model(tmp_path / "config.json").params() == m.params()
    names = {t.name: t for t in m.tensors()}
    assert "lm_head.weight" not in names and names["model.embed_tokens.weight"].role is TensorUse.HEAD
    assert names["model.layers.0.self_attn.q_proj.bias"].shape == (64,)
    # tied: the embedding doubles as the head, so it counts as activated
    assert m.activated_params() == m.params()


def test_missing_keys_named(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"hidden_size": 64, "kv_lora_rank": 8, "num_attention_heads": 2}))
    with pytest.raises(ModelConfigError) as exc:
        load_model(p)
    for key in ("num_hidden_layers", "vocab_size", "qk_rope_head_dim"):
        assert key in str(exc.value)


def test_unreadable_and_unsupported(tmp_path):
    with pytest.raises(ModelConfigError, match="built-in"):
        load_model(tmp_path / "nope")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ModelConfigError, match="JSON"):
        load_model(bad)
    mix = tmp_path / "mixtral.json"
    mix.write_text(json.dumps({"model_type": "mixtral", "num_local_experts": 8}))
    with pytest.raises(ModelConfigError, match="not modelled"):
        load_model(mix)
