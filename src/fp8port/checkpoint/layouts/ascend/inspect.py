"""What inspect says about an AscendV1 folder: types per tensor, which loaders accept it, what breaks them."""

from __future__ import annotations

from ...folder import DESCRIPTION, Checkpoint
from ..base import StoredWeight, scheme_groups
from .description import read_description, tensor_types
from .rules import float_reason, fused_group, layer_kind, mtp_layers
from .types import LOADERS, MX_GROUP, AscendType


def describe(ckpt: Checkpoint, weights: dict[str, StoredWeight]) -> dict:
    desc = read_description(ckpt)
    types = tensor_types(ckpt)
    warnings, refuse = [], {name: [] for name in LOADERS}
    mtp = mtp_layers(ckpt.tensors, ckpt.config)
    missing = [n for n in ckpt.tensors if n not in desc and n.endswith(".weight")]
    if missing:
        for r in refuse.values():
            r.append(f"{len(missing)} weights have no description entry (e.g. {missing[0]})")
    counts: dict[str, int] = {}
    quantized = {}
    for n, v in types.items():
        if not n.endswith(".weight"):
            continue
        counts[v] = counts.get(v, 0) + 1
        if v == "FLOAT":
            continue
        quantized[n] = v
        if v == AscendType.WFP8AFP8_DYNAMIC.value:
            continue
        why = float_reason(n, mtp)
        if why:
            warnings.append(f"{n} is {v} but should be FLOAT: {why}")
            if ".kv_b_proj." in n:
                refuse["vllm-ascend"].append(f"{n} is quantized: {why}")
        for loader, reg in LOADERS.items():
            if v not in reg[layer_kind(n)] and not any(
                r.startswith(f"no {layer_kind(n)} scheme for {v} ") for r in refuse[loader]
            ):
                refuse[loader].append(f"no {layer_kind(n)} scheme for {v} (e.g. {n})")
    if AscendType.WFP8AFP8_DYNAMIC.value in counts:
        msg = (
            "WFP8AFP8_DYNAMIC: msModelSlim writes this name but vLLM-Ascend registers W8A8FP8_DYNAMIC and "
            "SGLang neither, so both refuse it (§2.5)"
        )
        warnings.append(msg)
        for r in refuse.values():
            r.append(msg)
    groups: dict[str, set] = {}
    for n, v in types.items():
        if n.endswith(".weight") and fused_group(n):
            groups.setdefault(fused_group(n), set()).add(v)
    for g, vs in groups.items():
        if len(vs) > 1:
            warnings.append(f"{g}: fused modules have different types {sorted(vs)}; loaders need one (§2)")
    mx = [w for w in weights.values() if AscendType.parse(w.label).mx]
    if mx and desc.get("group_size") != MX_GROUP:
        warnings.append(f"group_size is {desc.get('group_size')!r}; MX types need 32 (§2.6)")
    odd = [w.name for w in mx if w.shape[1] % 64]
    if odd:
        warnings.append(
            f"{len(odd)} MX weights have K not a multiple of 64 (e.g. {odd[0]}): SGLang reshapes "
            "the scales in pairs without padding (§2.6)"
        )
    if ckpt.quantization_config:
        warnings.append("config.json still has quantization_config; vLLM may take the FP8 path (§1.4)")
    for key in ("model_quant_type", "version"):
        if key not in desc:
            warnings.append(f"{DESCRIPTION} has no {key!r} (§1.2)")
    scales = {w.parts["scale"] for w in weights.values()}
    return {
        "preset": desc.get("model_quant_type"),
        "element": ", ".join(f"{t} x{c}" for t, c in sorted(counts.items()) if t != "FLOAT") or "none",
        "block": "1x32 along K (MX)" if mx else "one scale per output channel",
        "scale_storage": sorted({ckpt.info(s).dtype for s in scales}),
        "groups": scheme_groups(weights),
        "loaders": {
            k: ("accepts it" if not v else "refuses it: " + "; ".join(sorted(set(v))[:8])) for k, v in refuse.items()
        },
        "ascend": {
            "model_quant_type": desc.get("model_quant_type"),
            "version": desc.get("version"),
            "group_size": desc.get("group_size"),
            "weights_per_type": dict(sorted(counts.items())),
            "mtp_layers": sorted(mtp),
            "loaders": {k: {"accepts": not v, "reasons": sorted(set(v))[:8]} for k, v in refuse.items()},
        },
        "warnings": warnings,
    }
