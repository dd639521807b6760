"""Roofline estimates: time = max(FLOPs / peak, bytes / bandwidth), and which of the two bounds it.

Ideal: n chips give n x peak and n x bandwidth; communication, kernel efficiency and scheduling are
ignored, so these are ceilings, useful for comparing chips and formats, not for promising throughput.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .memory import WeightBytes
from .model import Model


class Bound(enum.Enum):
    COMPUTE = "compute"
    MEMORY = "memory"  # memory bandwidth


class Phase(enum.Enum):
    PREFILL = "prefill"
    DECODE = "decode"


@dataclass(frozen=True)
class Work:
    flops: float
    bytes: float
    tokens: int  # tokens produced (decode) or consumed (prefill)


@dataclass(frozen=True)
class Estimate:
    work: Work
    compute_s: float
    memory_s: float

    @property
    def time_s(self) -> float:
        return max(self.compute_s, self.memory_s)

    @property
    def bound(self) -> Bound:
        return Bound.COMPUTE if self.compute_s >= self.memory_s else Bound.MEMORY

    @property
    def tokens_per_s(self) -> float:
        return self.work.tokens / self.time_s

    def to_json(self) -> dict:
        return {
            "tokens_per_s": self.tokens_per_s,
            "bound": self.bound.value,
            "time_s": self.time_s,
            "compute_s": self.compute_s,
            "memory_s": self.memory_s,
            "flops": self.work.flops,
            "bytes": self.work.bytes,
            "tokens": self.work.tokens,
        }


def roofline(work: Work, peak_flops: float, bandwidth: float) -> Estimate:
    return Estimate(work, work.flops / peak_flops, work.bytes / bandwidth)


def expected_distinct_experts(n_experts: int, k: int, tokens: int) -> float:
    """Routed experts touched by `tokens` tokens picking k of n each, routing uniform: n (1 - (1 - k/n)^T)."""
    return n_experts * (1.0 - (1.0 - k / n_experts) ** tokens)


def attention_flops_per_token(model: Model, position: int, phase: Phase) -> float:
    """Score and value FLOPs of one token attending to `position` keys, all layers.

    MLA prefill runs per head on the decompressed K/V (qk_nope + qk_rope for scores, v_head for values);
    MLA decode runs absorbed on the latent (kv_lora + qk_rope for scores, kv_lora for values), as the
    DeepSeek reference inference code does.
    """
    m = model.mla
    if m is None:
        per_key = 2 * model.head_dim
    elif phase is Phase.PREFILL:
        per_key = m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim
    else:
        per_key = 2 * m.kv_lora_rank + m.qk_rope_head_dim
    return 2.0 * model.num_heads * position * per_key * model.num_layers


def step_weight_bytes(model: Model, wb: WeightBytes, tokens: int) -> float:
    """Weight bytes one forward pass over `tokens` tokens reads: all non-routed weights plus the experts hit."""
    if model.moe is None:
        return float(wb.always_read)
    e = model.moe
    return (
        wb.always_read
        + wb.routed * expected_distinct_experts(e.n_routed_experts, e.experts_per_token, tokens) / e.n_routed_experts
    )


def decode_work(model: Model, wb: WeightBytes, context: int, batch: int, kv_per_token: float) -> Work:
    """One decode step of `batch` sequences each at `context` tokens: weights once, every sequence's cache."""
    flops = batch * (2.0 * model.activated_params() + attention_flops_per_token(model, context, Phase.DECODE))
    nbytes = step_weight_bytes(model, wb, batch) + batch * context * kv_per_token
    return Work(flops, nbytes, batch)


def prefill_work(model: Model, wb: WeightBytes, context: int, batch: int, kv_per_token: float) -> Work:
    """Prefill of `batch` prompts of `context` tokens: causal attention sums positions 1..context."""
    tokens = batch * context
    attn = attention_flops_per_token(model, 1, Phase.PREFILL) * context * (context + 1) / 2
    flops = tokens * 2.0 * model.activated_params() + batch * attn
    nbytes = step_weight_bytes(model, wb, tokens) + tokens * kv_per_token
    return Work(flops, nbytes, tokens)
