"""A Hugging Face config.json as llama.cpp's GGUF metadata: architecture, hyperparameters, tensor names.

What llama.cpp's `convert_hf_to_gguf.py` writes for the LLaMA family (Llama, Mistral, Qwen2, Qwen3:
the architectures whose hyperparameters are the generic set below), with the key names and tensor
name tables of the `gguf` package. Anything else (experts, sliding windows, rope scaling, ...) is a
typed error that names what is not mapped, never a file llama.cpp would misread.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ....errors import LayoutError

# Hugging Face class -> gguf MODEL_ARCH member: architectures whose metadata is the generic set
ARCHS = {
    "LlamaForCausalLM": "LLAMA",
    "MistralForCausalLM": "LLAMA",
    "Qwen2ForCausalLM": "QWEN2",
    "Qwen3ForCausalLM": "QWEN3",
}
# config keys that mean more than the generic set: refused by name where set (layer_types: unless every
# layer is full attention). Mistral's sliding_window is ignored, as llama.cpp's converter does.
UNMAPPED = ("num_experts", "num_local_experts", "n_routed_experts", "rope_scaling", "use_sliding_window")


@dataclass(frozen=True)
class Model:
    """What the writer needs of an architecture: its gguf name, tensor name map and metadata."""

    arch: str  # gguf architecture name ("llama")
    layers: int
    heads: int
    kv_heads: int
    kv: list  # [(key, value, GGUFValueType)]

    @cached_property
    def _names(self):
        import gguf

        arch = _member(self.arch)
        return gguf.TensorNameMap(arch, self.layers), set(gguf.MODEL_TENSORS[arch])

    def tensor_name(self, name: str) -> str:
        """llama.cpp's name of a Hugging Face tensor (typed error where the architecture has none)."""
        table, known = self._names
        got = table.get_type_and_name(name, try_suffixes=(".weight", ".bias"))
        if got is None or got[0] not in known:
            raise LayoutError(
                f"tensor {name!r} has no name in llama.cpp's {self.arch} architecture (gguf's "
                "TensorNameMap); exclude it from the source or convert another layout"
            )
        return got[1]


def _member(arch: str):
    import gguf

    return next(m for m, n in gguf.MODEL_ARCH_NAMES.items() if n == arch)


def _get(cfg: dict, where, *keys, default=None):
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    if default is None:
        raise LayoutError(f"{where}: {' / '.join(keys)} is missing; GGUF needs it")
    return default


def model(config: dict | None, where) -> Model:
    """The GGUF architecture, hyperparameters and name table of a config.json (typed errors name what
    is missing or not mapped)."""
    import gguf

    if not config:
        raise LayoutError(f"{where}: no config.json; GGUF needs the architecture and its hyperparameters")
    names = config.get("architectures") or []
    hf = next((a for a in names if a in ARCHS), None)
    if hf is None:
        known = config.get("model_type") in gguf.MODEL_ARCH_NAMES.values()
        also = (
            f"; the gguf package names {config.get('model_type')!r}, but fp8port maps no hyperparameters for it"
            if known
            else ""
        )
        raise LayoutError(
            f"{where}: architecture {names or config.get('model_type')!r}: fp8port writes GGUF "
            f"metadata for {', '.join(ARCHS)} only{also}"
        )
    rope = config.get("rope_parameters") or {}
    layers_kinds = set(config.get("layer_types") or ["full_attention"])
    extra = (
        [k for k in UNMAPPED if config.get(k)]
        + ([f"layer_types {sorted(layers_kinds)}"] if layers_kinds != {"full_attention"} else [])
        + (
            [f"rope_parameters.rope_type {rope['rope_type']!r}"]
            if rope.get("rope_type", "default") != "default"
            else []
        )
    )
    if extra:
        raise LayoutError(f"{where}: {hf} with {', '.join(extra)}: fp8port does not map that to GGUF metadata")
    arch = gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, ARCHS[hf])]
    hidden = int(_get(config, where, "hidden_size"))
    heads = int(_get(config, where, "num_attention_heads"))
    kv_heads = int(_get(config, where, "num_key_value_heads", default=heads))
    layers = int(_get(config, where, "num_hidden_layers"))
    head_dim = int(_get(config, where, "head_dim", default=hidden // heads))
    U32, F32 = gguf.GGUFValueType.UINT32, gguf.GGUFValueType.FLOAT32
    K = gguf.Keys
    kv = [
        (K.General.NAME, str(config.get("_name_or_path") or config.get("_model_name_or_path") or hf), None),
        (K.LLM.VOCAB_SIZE.format(arch=arch), int(_get(config, where, "vocab_size")), U32),
        (K.LLM.CONTEXT_LENGTH.format(arch=arch), int(_get(config, where, "max_position_embeddings")), U32),
        (K.LLM.EMBEDDING_LENGTH.format(arch=arch), hidden, U32),
        (K.LLM.BLOCK_COUNT.format(arch=arch), layers, U32),
        (K.LLM.FEED_FORWARD_LENGTH.format(arch=arch), int(_get(config, where, "intermediate_size")), U32),
        (K.Attention.HEAD_COUNT.format(arch=arch), heads, U32),
        (K.Attention.HEAD_COUNT_KV.format(arch=arch), kv_heads, U32),
        (K.Rope.FREQ_BASE.format(arch=arch), float(_get({**rope, **config}, where, "rope_theta")), F32),
        (K.Attention.LAYERNORM_RMS_EPS.format(arch=arch), float(_get(config, where, "rms_norm_eps")), F32),
        (K.Rope.DIMENSION_COUNT.format(arch=arch), head_dim, U32),
    ]
    if head_dim != hidden // heads:  # Qwen3: heads wider than hidden / heads
        kv += [
            (K.Attention.KEY_LENGTH.format(arch=arch), head_dim, U32),
            (K.Attention.VALUE_LENGTH.format(arch=arch), head_dim, U32),
        ]
    return Model(arch, layers, heads, kv_heads, kv)
