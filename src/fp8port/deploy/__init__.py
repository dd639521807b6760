"""Deployment planner: chip profiles with sources, weight and KV-cache bytes, roofline estimates.

`plan(model, chip, ...)` answers, per preset: how many bytes, how many chips, native or emulated,
and what prefill / decode throughput the roofline allows, for the chip and any chips to compare.
"""

from __future__ import annotations

from .ascend import ascend_types
from .chips import Chip, ChipDataError, Column, Confidence, Figure, MatmulPath, Status, get_chip, load_chips
from .execution import Choice, Execution, choose
from .memory import (
    BF16,
    Encoding,
    WeightBytes,
    kv_bytes_per_token,
    kv_cache_bytes,
    min_chips,
    parse_encoding,
    weight_bytes,
)
from .model import Model, ModelConfigError, Tensor, TensorUse, builtin_models, load_model, model_from_config
from .roofline import Bound, Estimate, Phase, Work, decode_work, prefill_work, roofline

DEFAULT_PRESETS = (BF16, "deepseek-v3.1", "mxfp8", "mxfp4")

ASSUMPTIONS = (
    "weights: quantizable matmul weights in the preset's codes + scales; embeddings, lm_head, norms, router "
    "gates and biases stay BF16 (the MoE score-correction bias F32)",
    "KV cache counted once for the whole deployment (data-parallel attention); an MLA cache replicated per "
    "tensor-parallel rank needs more",
    "min chips: (weights + KV cache) / (package memory x usable fraction); activations and runtime live in "
    "the remainder",
    "roofline: n chips give n x peak FLOPS and n x memory bandwidth, no communication, 100% efficiency",
    "prefill: batch prompts of `context` tokens; decode: one step of batch sequences at `context` tokens",
    "MoE: routing uniform, a step reads the expected number of distinct experts n(1-(1-k/n)^tokens)",
    "emulated: weights dequantized to BF16 on the fly; BF16 matmul rate, the preset's weight bytes",
)


def _entry(
    model: Model,
    chip: Chip,
    enc: Encoding,
    context: int,
    batch: int,
    usable_fraction: float,
    kv_bytes: float,
    include_mtp: bool,
) -> dict:
    wb = weight_bytes(model, enc, include_mtp)
    kv = kv_cache_bytes(model, context, batch, kv_bytes)
    total = wb.total + kv
    choice = choose(chip, enc)
    out = {
        "chip": chip.name,
        "preset": enc.name,
        "weights": wb.to_json(),
        "kv_cache": kv,
        "total": total,
        "execution": choice.execution.value,
        "path": choice.path.value,
        "column": choice.column.value,
        "peak": choice.peak.to_json(),
        "memory_bandwidth": chip.memory_bandwidth.to_json(),
    }
    if not chip.memory.known:
        out.update(min_chips=None, devices=None, min_chips_reason=f"memory: {chip.memory.reason}")
    else:
        n = min_chips(total, chip.memory.si, usable_fraction)
        out.update(min_chips=n, devices=n * chip.devices_per_package)
    missing = [
        f"{what}: {fig.reason}"
        for what, fig in (
            ("memory", chip.memory),
            (f"{choice.column.value} throughput", choice.peak),
            ("memory bandwidth", chip.memory_bandwidth),
        )
        if not fig.known
    ]
    for phase, work_fn in (("prefill", prefill_work), ("decode", decode_work)):
        if missing:
            out[phase] = {"tokens_per_s": None, "reason": "; ".join(missing)}
            continue
        n = out["min_chips"]
        work = work_fn(model, wb, context, batch, kv_bytes_per_token(model, kv_bytes))
        est = roofline(work, n * choice.peak.si, n * chip.memory_bandwidth.si).to_json()
        est["chips"] = n
        est["tokens_per_s_per_chip"] = est["tokens_per_s"] / n
        out[phase] = est
    return out


def plan(
    model,
    chip,
    presets=DEFAULT_PRESETS,
    context: int = 4096,
    batch: int = 1,
    compare=(),
    usable_fraction: float = 0.9,
    kv_bytes: float = 2,
    include_mtp: bool = False,
) -> dict:
    """A JSON-able plan: one entry per (chip, preset), the first chip first.

    `model`: an HF folder, a config.json path, a built-in name, or a `Model`. `chip` and `compare`:
    names or aliases from chips.json. `presets`: 'bf16' or preset names from fp8port.quant.
    """
    if context < 1 or batch < 1:
        raise ValueError(f"context and batch must be positive, got {context} and {batch}")
    if not 0 < usable_fraction <= 1:
        raise ValueError(f"usable fraction must lie in (0, 1], got {usable_fraction}")
    m = load_model(model)
    chips = [get_chip(chip)] + [get_chip(c) for c in compare]
    chips = list({c.name: c for c in chips}.values())  # a chip named twice is planned once
    encs = list({e.name: e for e in (parse_encoding(p) for p in presets)}.values())
    return {
        "model": m.summary(),
        "context": context,
        "batch": batch,
        "usable_fraction": usable_fraction,
        "kv_bytes_per_value": kv_bytes,
        "include_mtp": include_mtp,
        "chips": [
            {
                "name": c.name,
                "vendor": c.vendor,
                "status": c.status.value,
                "devices_per_package": c.devices_per_package,
                "memory": c.memory.to_json(),
                "memory_bandwidth": c.memory_bandwidth.to_json(),
                "ascend_types": list(ascend_types(c)),
            }
            for c in chips
        ],
        "presets": [e.name for e in encs],
        "results": [
            _entry(m, c, e, context, batch, usable_fraction, kv_bytes, include_mtp) for c in chips for e in encs
        ],
        "assumptions": list(ASSUMPTIONS),
    }


__all__ = [
    "ASSUMPTIONS",
    "BF16",
    "Bound",
    "Chip",
    "ChipDataError",
    "Choice",
    "Column",
    "Confidence",
    "DEFAULT_PRESETS",
    "Encoding",
    "Estimate",
    "Execution",
    "Figure",
    "Model",
    "ModelConfigError",
    "MatmulPath",
    "Phase",
    "TensorUse",
    "Status",
    "Tensor",
    "WeightBytes",
    "Work",
    "builtin_models",
    "choose",
    "decode_work",
    "get_chip",
    "kv_bytes_per_token",
    "kv_cache_bytes",
    "load_chips",
    "load_model",
    "min_chips",
    "model_from_config",
    "parse_encoding",
    "plan",
    "prefill_work",
    "roofline",
    "weight_bytes",
]
