"""quant_model_description.json (one type per tensor plus global keys) and msModelSlim's file names."""

from __future__ import annotations

import json

from ....errors import CheckpointError, UnknownNameError
from ...folder import ASCEND_INDEX, DESCRIPTION, Checkpoint
from .types import MX_GROUP, PRIORITY, AscendType

VERSION = "1.0.0"
INDEX = ASCEND_INDEX


def read_description(ckpt: Checkpoint) -> dict:
    path = ckpt.root / DESCRIPTION
    try:
        desc = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        raise CheckpointError(f"{path}: not valid JSON") from None
    if not isinstance(desc, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return desc


def tensor_types(ckpt: Checkpoint) -> dict[str, str]:
    """tensor name -> its type string (as written: unknown names are kept for inspect to report)."""
    return {n: v for n, v in read_description(ckpt).items() if n in ckpt.tensors and isinstance(v, str)}


def quantized_types(ckpt: Checkpoint) -> dict[str, AscendType]:
    """Quantized weights (not FLOAT) -> their type; companions are the rest of their module."""
    out = {}
    for n, v in tensor_types(ckpt).items():
        if not n.endswith(".weight"):
            continue
        try:
            t = AscendType.parse(v)
        except UnknownNameError:
            raise CheckpointError(
                f"{ckpt.root / DESCRIPTION}: {n!r} has type {v!r}, which fp8port does not read"
            ) from None
        if t is not AscendType.FLOAT:
            if len(ckpt.info(n).shape) != 2:
                raise CheckpointError(
                    f"{ckpt.root / DESCRIPTION}: {n!r} is {t.value}, but its tensor has shape "
                    f"{list(ckpt.info(n).shape)} (quantized weights are 2-D)"
                )
            out[n] = t
    return out


def description(types: dict[str, AscendType]) -> dict:
    """The description of tensors of these types (in this order), with msModelSlim's global keys in its order.
    model_quant_type is the highest-priority type present; W4A8_DYNAMIC is not in its list, so a W4A8_DYNAMIC
    model says FLOAT (its lm_head is a FLOAT Linear)."""
    present = set(types.values()) | {AscendType.FLOAT}
    top = max((t for t in present if t in PRIORITY), key=PRIORITY.index)
    desc = {n: t.value for n, t in types.items()}
    desc.update(
        version=VERSION,
        model_quant_type=top.value,
        metadata={},
        group_size=MX_GROUP if any(t.mx for t in present) else 0,
        optional={},
    )
    return desc


def shard_names(n: int) -> list[str]:
    """msModelSlim numbers its shards also when there is one."""
    return [f"quant_model_weights-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
