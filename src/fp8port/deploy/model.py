"""A model as the list of weight tensors its Hugging Face checkpoint holds, read from config.json.

Two families: dense Llama-style (GQA attention, SwiGLU MLP) and DeepSeek-V2/V3-style MoE with MLA
attention. Tensor names and shapes follow the HF checkpoints (`modeling_deepseek.py`, `modeling_llama.py`).
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

from ..errors import Fp8portError

BUILTIN_SUFFIX = ".json"


class ModelConfigError(Fp8portError, ValueError):
    """A model config that cannot be read or lacks what the planner needs."""


class TensorUse(enum.Enum):
    LINEAR = "linear"  # a matmul weight that block-scaled presets quantize, read for every token
    EXPERT = "expert"  # a routed-expert matmul weight: quantized, read only when the router picks it
    DENSE = "dense"  # kept high precision and read for every token: norms, router gate, biases
    HEAD = "head"  # lm_head (or tied embedding): kept high precision, a matmul for every token
    EMBEDDING = "embedding"  # lookup table: kept high precision, only the token's row is read

    @property
    def quantized(self) -> bool:
        return self in (TensorUse.LINEAR, TensorUse.EXPERT)


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    role: TensorUse
    dense_bytes: int = 2  # bytes per element when kept high precision: BF16, or F32 for the MoE bias
    mtp: bool = False  # belongs to a multi-token-prediction module

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class AttentionKind(enum.Enum):
    GQA = "gqa"  # MHA and MQA are the kv_heads == heads and kv_heads == 1 cases
    MLA = "mla"


@dataclass(frozen=True)
class MLA:
    q_lora_rank: int | None  # None: a plain q_proj (DeepSeek-V2-Lite)
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class MoE:
    n_routed_experts: int
    n_shared_experts: int
    experts_per_token: int
    moe_intermediate_size: int
    first_k_dense_replace: int
    moe_layer_freq: int
    score_bias: bool  # noaux_tc routing keeps an F32 e_score_correction_bias per expert

    def is_moe_layer(self, layer: int) -> bool:
        return layer >= self.first_k_dense_replace and layer % self.moe_layer_freq == 0


@dataclass(frozen=True)
class Model:
    name: str
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    attention_bias: bool
    mlp_bias: bool
    mla: MLA | None
    moe: MoE | None
    mtp_layers: int

    @property
    def attention(self) -> AttentionKind:
        return AttentionKind.MLA if self.mla else AttentionKind.GQA

    def tensors(self, include_mtp: bool = False) -> tuple[Tensor, ...]:
        return self._main + (self._mtp if include_mtp else ())

    def params(self, include_mtp: bool = False) -> int:
        return sum(t.numel for t in self.tensors(include_mtp))

    def activated_params(self) -> int:
        """Parameters one token multiplies through (no input embedding; k of the routed experts)."""
        always = sum(t.numel for t in self._main if t.role not in (TensorUse.EMBEDDING, TensorUse.EXPERT))
        routed = sum(t.numel for t in self._main if t.role is TensorUse.EXPERT)
        if not self.moe:
            return always
        return always + routed * self.moe.experts_per_token // self.moe.n_routed_experts

    def kv_values_per_token(self) -> int:
        """Cached values per token over all layers: MLA keeps the latent plus the rope key (absorbed form)."""
        if self.mla:
            per_layer = self.mla.kv_lora_rank + self.mla.qk_rope_head_dim
        else:
            per_layer = 2 * self.num_kv_heads * self.head_dim
        return per_layer * self.num_layers

    def summary(self) -> dict:
        return {
            "name": self.name,
            "model_type": self.model_type,
            "attention": self.attention.value,
            "moe": self.moe is not None,
            "layers": self.num_layers,
            "mtp_layers": self.mtp_layers,
            "params": self.params(),
            "params_with_mtp": self.params(include_mtp=True),
            "activated_params": self.activated_params(),
            "kv_values_per_token": self.kv_values_per_token(),
        }

    @cached_property
    def _main(self) -> tuple[Tensor, ...]:
        out = [
            Tensor(
                "model.embed_tokens.weight",
                (self.vocab_size, self.hidden_size),
                TensorUse.HEAD if self.tie_word_embeddings else TensorUse.EMBEDDING,
            )
        ]
        for layer in range(self.num_layers):
            out += self._layer(f"model.layers.{layer}", layer)
        out.append(Tensor("model.norm.weight", (self.hidden_size,), TensorUse.DENSE))
        if not self.tie_word_embeddings:
            out.append(Tensor("lm_head.weight", (self.vocab_size, self.hidden_size), TensorUse.HEAD))
        return tuple(out)

    @cached_property
    def _mtp(self) -> tuple[Tensor, ...]:
        # DeepSeek-V3 stores each MTP module as layer num_hidden_layers + i with its own copies of the
        # embedding and head; eh_proj is a plain nn.Linear in SGLang / vLLM, so it stays BF16.
        h, out = self.hidden_size, []
        for i in range(self.mtp_layers):
            layer = self.num_layers + i
            p = f"model.layers.{layer}"
            out += [
                Tensor(f"{p}.embed_tokens.weight", (self.vocab_size, h), TensorUse.EMBEDDING, mtp=True),
                Tensor(f"{p}.enorm.weight", (h,), TensorUse.DENSE, mtp=True),
                Tensor(f"{p}.hnorm.weight", (h,), TensorUse.DENSE, mtp=True),
                Tensor(f"{p}.eh_proj.weight", (h, 2 * h), TensorUse.HEAD, mtp=True),
            ]
            out += [Tensor(t.name, t.shape, t.role, t.dense_bytes, mtp=True) for t in self._layer(p, layer)]
            out += [
                Tensor(f"{p}.shared_head.norm.weight", (h,), TensorUse.DENSE, mtp=True),
                Tensor(f"{p}.shared_head.head.weight", (self.vocab_size, h), TensorUse.HEAD, mtp=True),
            ]
        return tuple(out)

    def _layer(self, p: str, layer: int) -> list[Tensor]:
        h = self.hidden_size
        out = [Tensor(f"{p}.input_layernorm.weight", (h,), TensorUse.DENSE)]
        out += self._mla(p) if self.mla else self._gqa(p)
        out.append(Tensor(f"{p}.post_attention_layernorm.weight", (h,), TensorUse.DENSE))
        if self.moe and self.moe.is_moe_layer(layer):
            out += self._moe(p)
        else:
            out += _mlp(f"{p}.mlp", h, self.intermediate_size, TensorUse.LINEAR, self.mlp_bias)
        return out

    def _gqa(self, p: str) -> list[Tensor]:
        h, d = self.hidden_size, self.head_dim
        q, kv = self.num_heads * d, self.num_kv_heads * d
        out = []
        for name, shape in (("q_proj", (q, h)), ("k_proj", (kv, h)), ("v_proj", (kv, h)), ("o_proj", (h, q))):
            out.append(Tensor(f"{p}.self_attn.{name}.weight", shape, TensorUse.LINEAR))
            if self.attention_bias:
                out.append(Tensor(f"{p}.self_attn.{name}.bias", (shape[0],), TensorUse.DENSE))
        return out

    def _mla(self, p: str) -> list[Tensor]:
        m, h, n = self.mla, self.hidden_size, self.num_heads
        a = f"{p}.self_attn"
        q_head = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank:
            out = [
                Tensor(f"{a}.q_a_proj.weight", (m.q_lora_rank, h), TensorUse.LINEAR),
                Tensor(f"{a}.q_a_layernorm.weight", (m.q_lora_rank,), TensorUse.DENSE),
                Tensor(f"{a}.q_b_proj.weight", (n * q_head, m.q_lora_rank), TensorUse.LINEAR),
            ]
        else:
            out = [Tensor(f"{a}.q_proj.weight", (n * q_head, h), TensorUse.LINEAR)]
        return out + [
            Tensor(f"{a}.kv_a_proj_with_mqa.weight", (m.kv_lora_rank + m.qk_rope_head_dim, h), TensorUse.LINEAR),
            Tensor(f"{a}.kv_a_layernorm.weight", (m.kv_lora_rank,), TensorUse.DENSE),
            Tensor(
                f"{a}.kv_b_proj.weight", (n * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank), TensorUse.LINEAR
            ),
            Tensor(f"{a}.o_proj.weight", (h, n * m.v_head_dim), TensorUse.LINEAR),
        ]

    def _moe(self, p: str) -> list[Tensor]:
        e, h = self.moe, self.hidden_size
        out = [Tensor(f"{p}.mlp.gate.weight", (e.n_routed_experts, h), TensorUse.DENSE)]
        if e.score_bias:
            out.append(Tensor(f"{p}.mlp.gate.e_score_correction_bias", (e.n_routed_experts,), TensorUse.DENSE, 4))
        for i in range(e.n_routed_experts):
            out += _mlp(f"{p}.mlp.experts.{i}", h, e.moe_intermediate_size, TensorUse.EXPERT, False)
        if e.n_shared_experts:
            out += _mlp(
                f"{p}.mlp.shared_experts", h, e.moe_intermediate_size * e.n_shared_experts, TensorUse.LINEAR, False
            )
        return out


def _mlp(p: str, hidden: int, inter: int, role: TensorUse, bias: bool) -> list[Tensor]:
    out = []
    for name, shape in (("gate_proj", (inter, hidden)), ("up_proj", (inter, hidden)), ("down_proj", (hidden, inter))):
        out.append(Tensor(f"{p}.{name}.weight", shape, role))
        if bias:
            out.append(Tensor(f"{p}.{name}.bias", (shape[0],), TensorUse.DENSE))
    return out


_COMMON = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size")
_MLA_KEYS = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
_MOE_KEYS = ("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size")
_UNSUPPORTED_MOE = ("num_local_experts", "num_experts")  # Mixtral / Qwen-MoE layouts: not modelled


def _int(cfg: dict, key: str, where: str, default=None, allow_none=False) -> int | None:
    v = cfg.get(key, default)
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ModelConfigError(f"{where}: {key} must be a non-negative integer, got {v!r}")
    return v


def model_from_config(cfg: dict, name: str = "model") -> Model:
    """Parse a config.json dict; raises ModelConfigError naming every missing key."""
    if not isinstance(cfg, dict):
        raise ModelConfigError(f"{name}: config.json must hold a JSON object")
    mla_cfg = "kv_lora_rank" in cfg
    moe_cfg = "n_routed_experts" in cfg and cfg.get("n_routed_experts")
    if not moe_cfg and any(cfg.get(k) for k in _UNSUPPORTED_MOE):
        raise ModelConfigError(
            f"{name}: MoE layout of model_type {cfg.get('model_type')!r} is not modelled; "
            "supported: dense Llama-style and DeepSeek-V2/V3-style MoE (n_routed_experts)"
        )
    required = _COMMON + (_MLA_KEYS if mla_cfg else ()) + (_MOE_KEYS if moe_cfg else ())
    missing = [k for k in required if k not in cfg]
    if missing:
        raise ModelConfigError(
            f"{name}: config.json lacks {', '.join(missing)} "
            f"(needed for a {'MLA ' if mla_cfg else ''}{'MoE' if moe_cfg else 'dense'} model)"
        )
    heads = _int(cfg, "num_attention_heads", name)
    hidden = _int(cfg, "hidden_size", name)
    if heads == 0:
        raise ModelConfigError(f"{name}: num_attention_heads must be positive")
    mla = (
        MLA(_int(cfg, "q_lora_rank", name, allow_none=True), *(_int(cfg, k, name) for k in _MLA_KEYS))
        if mla_cfg
        else None
    )
    moe = (
        MoE(
            _int(cfg, "n_routed_experts", name),
            _int(cfg, "n_shared_experts", name, 0),
            _int(cfg, "num_experts_per_tok", name),
            _int(cfg, "moe_intermediate_size", name),
            _int(cfg, "first_k_dense_replace", name, 0),
            max(_int(cfg, "moe_layer_freq", name, 1), 1),
            cfg.get("topk_method") == "noaux_tc",
        )
        if moe_cfg
        else None
    )
    if moe and not 0 < moe.experts_per_token <= moe.n_routed_experts:
        raise ModelConfigError(f"{name}: num_experts_per_tok must lie in 1..n_routed_experts")
    return Model(
        name=name,
        model_type=str(cfg.get("model_type", "unknown")),
        hidden_size=hidden,
        intermediate_size=_int(cfg, "intermediate_size", name),
        num_layers=_int(cfg, "num_hidden_layers", name),
        num_heads=heads,
        num_kv_heads=_int(cfg, "num_key_value_heads", name, heads),
        head_dim=_int(cfg, "head_dim", name, hidden // heads, allow_none=True) or hidden // heads,
        vocab_size=_int(cfg, "vocab_size", name),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        attention_bias=bool(cfg.get("attention_bias", False)),
        mlp_bias=bool(cfg.get("mlp_bias", False)),
        mla=mla,
        moe=moe,
        mtp_layers=_int(cfg, "num_nextn_predict_layers", name, 0),
    )


def builtin_models() -> list[str]:
    files = resources.files(__package__).joinpath("configs").iterdir()
    return sorted(f.name[: -len(BUILTIN_SUFFIX)] for f in files if f.name.endswith(BUILTIN_SUFFIX))


def load_model(source) -> Model:
    """A Model from an HF folder, a config.json path, or a built-in name (`builtin_models()`)."""
    if isinstance(source, Model):
        return source
    key = str(source)
    if key.lower() in builtin_models():
        text = (
            resources.files(__package__).joinpath("configs").joinpath(key.lower() + BUILTIN_SUFFIX).read_text("utf-8")
        )
        return model_from_config(json.loads(text), key.lower())
    path = Path(key)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ModelConfigError(
            f"model {key!r}: not a folder with config.json, a config file, or a built-in "
            f"name ({', '.join(builtin_models())})"
        )
    try:
        cfg = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelConfigError(f"{path}: cannot read as JSON ({exc})") from None
    name = path.parent.name if path.name == "config.json" else path.stem
    return model_from_config(cfg, name or str(path))
