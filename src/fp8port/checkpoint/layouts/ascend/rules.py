"""What must stay FLOAT, what a loader fuses, and the per-tensor checks of an AscendV1 plan."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

from ....errors import ConversionError
from .types import AscendType, scale_bias_slices

# What stays FLOAT in a DeepSeek-style model (§2.8, §4.6), with the reason a loader needs it.
FLOAT_RULES = (
    ("*.kv_b_proj.*", "vLLM-Ascend MLA splits kv_b_proj into W_UK/W_UV and asserts it is unquantized (§2.8)"),
    ("*.mlp.gate.*", "router gate kept float by msModelSlim's DeepSeek recipes (§2.8)"),
    ("*e_score_correction_bias*", "router bias kept float (§2.8)"),
    ("*norm*", "norms are FLOAT (§2.8)"),
    ("*embed*", "embeddings are FLOAT (§2.8)"),
    ("lm_head.*", "lm_head is FLOAT (§2.8)"),
    ("*.shared_head.*", "the MTP head is FLOAT (§2.8)"),
    ("*.indexer.*", "DeepSeek-V3.2 indexer projections are excluded (§4.6)"),
)
MTP_MARKERS = ("enorm", "hnorm", "eh_proj", "shared_head")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_EXPERT = re.compile(r"\.mlp\.experts\.\d+\.")


def float_reason(name: str, mtp: set[int]) -> str | None:
    """Why a tensor must stay FLOAT, or None if a loader accepts it quantized."""
    m = _LAYER.match(name)
    if m and int(m.group(1)) in mtp:
        return "the MTP layer is FLOAT: vLLM-Ascend's deepseek_mtp expects it so (§2.8)"
    return next((why for pat, why in FLOAT_RULES if fnmatchcase(name, pat)), None)


def mtp_layers(names, config: dict | None) -> set[int]:
    """DeepSeek's multi-token-prediction layers: the ones after num_hidden_layers, or any layer
    holding MTP-only modules (enorm, hnorm, eh_proj, shared_head)."""
    out = set()
    cfg = config or {}
    n, k = cfg.get("num_hidden_layers"), cfg.get("num_nextn_predict_layers") or 0
    if isinstance(n, int) and isinstance(k, int):
        out.update(range(n, n + k))
    for name in names:
        m = _LAYER.match(name)
        if m and any(f".{mark}." in name for mark in MTP_MARKERS):
            out.add(int(m.group(1)))
    return out


def layer_kind(name: str) -> str:
    return "moe" if _EXPERT.search(name) else "linear"


def fused_group(name: str) -> str | None:
    """Modules a loader fuses, which must share one type (§2 conventions, §7.4)."""
    base = name.rsplit(".", 1)[0]
    for members, tag in (
        (("q_proj", "k_proj", "v_proj"), "qkv"),
        (("gate_proj", "up_proj"), "gate_up"),
        (("q_a_proj", "kv_a_proj_with_mqa"), "fused_qkv_a"),
    ):
        for m in members:
            if base.endswith("." + m):
                prefix = base[: -len(m) - 1]
                if _EXPERT.search(name):  # all experts of one MoE layer: one type
                    return _EXPERT.split(name)[0] + ".mlp.experts"
                return f"{prefix}:{tag}"
    if _EXPERT.search(name):
        return _EXPERT.split(name)[0] + ".mlp.experts"
    return None


# transformers' module order (each class's __init__): what msModelSlim's saver walks, layer by layer.
MODULE_ORDER = {
    n: i
    for i, n in enumerate(
        (
            "model",
            "embed_tokens",
            "layers",
            "norm",
            "lm_head",  # the model; its layers are written first (below)
            "self_attn",
            "mlp",
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",  # a decoder layer
            "q_proj",
            "q_a_proj",
            "q_a_layernorm",
            "q_b_proj",
            "k_proj",
            "v_proj",
            "kv_a_proj_with_mqa",
            "kv_a_layernorm",
            "kv_b_proj",
            "o_proj",
            "q_norm",
            "k_norm",  # attention (Llama, Qwen3, DeepSeek MLA)
            "gate_proj",
            "up_proj",
            "down_proj",
            "experts",
            "gate",
            "shared_experts",  # MLP and MoE
            "weight",
            "weight_scale",
            "weight_offset",
            "scale_bias",
            "quant_bias",
            "input_scale",
            "input_offset",
            "deq_scale",
            "bias",
        )
    )
}  # a module's tensors, as its saver writes them


def module_order(name: str) -> tuple:
    """Sort key giving the order msModelSlim writes tensors in: every decoder layer by index, each in module
    order (names above; others after them, alphabetically), then the rest of the model (embedding, final norm,
    lm_head). Its saver runs layer by layer, then walks what is left."""
    m = _LAYER.match(name)
    parts = name.split(".")
    return (
        0 if m else 1,
        *((0, int(p), "") if p.isdigit() else (1, MODULE_ORDER.get(p, len(MODULE_ORDER)), p) for p in parts),
    )


def check_fits(t: AscendType, name: str, shape, has_bias: bool, activations: dict) -> None:
    n, k = shape
    if t.fp4 and k % 2:
        raise ConversionError(
            f"{name} {list(shape)}: K = {k} is odd, so its E2M1 codes do not fill whole bytes "
            "along K (two per byte, §2.7); keep it FLOAT with --exclude or choose W8A8_MXFP8"
        )
    if t is AscendType.W4A8_DYNAMIC:
        slices = scale_bias_slices(name)
        if n % 2 or k % slices:
            raise ConversionError(
                f"{name} {list(shape)}: W4A8_DYNAMIC packs pairs of rows (N even) and sums K in "
                f"{slices} slices; keep it FLOAT with --exclude"
            )
    base = name[: -len(".weight")]
    if t is AscendType.W8A8:
        if base not in activations:
            raise ConversionError(
                f"{name}: no activation scales for {base!r} in --activation-scales; W8A8 "
                "(static) needs input_scale and input_offset for every quantized Linear"
            )
        if has_bias:
            raise ConversionError(
                f"{name}: has a bias; how the loaders combine it with W8A8's quant_bias is "
                "unverified (§2.1), so fp8port does not write it; use W8A8_DYNAMIC"
            )


def check_groups(types: dict[str, AscendType]) -> None:
    seen: dict[str, tuple[str, AscendType]] = {}
    for name, t in types.items():
        if not name.endswith(".weight"):
            continue
        g = fused_group(name)
        if g is None:
            continue
        if g in seen and seen[g][1] is not t:
            raise ConversionError(
                f"{name} would be {t.value} but {seen[g][0]} is {seen[g][1].value}: the loaders "
                "fuse these modules and need one type (§2); adjust --include/--exclude"
            )
        seen.setdefault(g, (name, t))
