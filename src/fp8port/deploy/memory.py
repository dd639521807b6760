"""Bytes: weights per encoding (codes + scales + high-precision tensors), KV cache, chips needed."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import UnknownNameError
from ..quant import PRESETS, Scheme, get_preset
from .model import Model, Tensor, TensorUse

BF16 = "bf16"
_BF16_ALIASES = ("bf16", "bfloat16", "none")


@dataclass(frozen=True)
class Encoding:
    """How the quantizable weights are stored: a preset's weight scheme, or BF16 (`weight is None`)."""

    name: str
    weight: Scheme | None


def parse_encoding(name) -> Encoding:
    if isinstance(name, Encoding):
        return name
    if str(name).strip().lower() in _BF16_ALIASES:
        return Encoding(BF16, None)
    try:
        preset = get_preset(name)
    except UnknownNameError:
        raise UnknownNameError("preset", name, [BF16, *PRESETS]) from None
    return Encoding(preset.name, preset.weight)


def quantized_tensor_bytes(shape: tuple[int, ...], scheme: Scheme) -> tuple[int, int]:
    """(code bytes, scale bytes) of one tensor: codes packed densely, one scale per block, partial blocks count."""
    codes = math.ceil(math.prod(shape) * scheme.element.bits / 8)
    blocks = math.prod(scheme.block.grid(shape))
    scales = blocks * scheme.storage.nbytes + scheme.storage.tensor_scale_bytes
    return codes, scales


@dataclass(frozen=True)
class WeightBytes:
    codes: int  # quantized element codes
    scales: int  # their block scales
    dense: int  # tensors kept high precision (all of them under BF16)
    routed: int  # part of the total held by routed experts (codes + scales)
    embedding: int  # part of the total held by input-embedding tables

    @property
    def total(self) -> int:
        return self.codes + self.scales + self.dense

    @property
    def always_read(self) -> int:
        """Bytes every forward step reads whatever the router picks (the embedding reads only B rows)."""
        return self.total - self.routed - self.embedding

    def to_json(self) -> dict:
        return {
            "total": self.total,
            "codes": self.codes,
            "scales": self.scales,
            "dense": self.dense,
            "routed_experts": self.routed,
            "embedding": self.embedding,
        }


def tensor_bytes(t: Tensor, enc: Encoding) -> tuple[int, int, int]:
    """(codes, scales, dense) bytes of one tensor under an encoding."""
    if enc.weight is None or not t.role.quantized:
        return 0, 0, t.numel * t.dense_bytes
    codes, scales = quantized_tensor_bytes(t.shape, enc.weight)
    return codes, scales, 0


def weight_bytes(model: Model, encoding, include_mtp: bool = False) -> WeightBytes:
    enc = parse_encoding(encoding)
    codes = scales = dense = routed = embedding = 0
    for t in model.tensors(include_mtp):
        c, s, d = tensor_bytes(t, enc)
        codes, scales, dense = codes + c, scales + s, dense + d
        if t.role is TensorUse.EXPERT:
            routed += c + s + d
        elif t.role is TensorUse.EMBEDDING:
            embedding += c + s + d
    return WeightBytes(codes, scales, dense, routed, embedding)


def kv_bytes_per_token(model: Model, kv_bytes: float = 2) -> float:
    """Cache bytes per token over all layers; `kv_bytes` per value (2 for BF16, 1 for an FP8 cache)."""
    return model.kv_values_per_token() * kv_bytes


def kv_cache_bytes(model: Model, context: int, batch: int, kv_bytes: float = 2) -> int:
    """The cache for `batch` sequences of `context` tokens, counted once (not replicated per TP rank)."""
    return math.ceil(kv_bytes_per_token(model, kv_bytes) * context * batch)


def min_chips(total_bytes: int, memory_bytes: float, usable_fraction: float = 0.9) -> int:
    """Packages whose memory, at `usable_fraction` (the rest: activations, runtime, fragmentation), holds the bytes."""
    if not 0 < usable_fraction <= 1:
        raise ValueError(f"usable fraction must lie in (0, 1], got {usable_fraction}")
    return max(1, math.ceil(total_bytes / (memory_bytes * usable_fraction)))
