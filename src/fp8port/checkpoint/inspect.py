"""What a checkpoint is: its layout and why, the scheme per tensor group, who loads it, and warnings."""

from __future__ import annotations

import math
from collections import Counter

from .. import engines
from ..errors import CheckpointError
from . import layouts
from .folder import Checkpoint


def inspect(path) -> dict:
    """A JSON-able description: generic facts, then what the layout's handler says (`describe`)."""
    ckpt = Checkpoint.open(path)
    handler, why = layouts.detect(ckpt)
    warnings = []
    try:
        weights = handler.weights(ckpt)
    except CheckpointError as e:  # a broken file is described as far as it goes, not refused
        weights = {}
        warnings.append(f"the quantized weights cannot be read: {e}")
    dense = [n for n, w in layouts.in_order(ckpt, weights) if w is None]
    dtypes = Counter(info.dtype for _, info in ckpt.tensors.values())
    size = Counter()
    for _, info in ckpt.tensors.values():
        size[info.dtype] += info.nbytes
    groups = list(dict.fromkeys((w.scheme.element.name, str(w.scheme.block)) for w in weights.values()))
    out = {
        "path": str(ckpt.root),
        "files": [f.name for f in ckpt.files],
        "tensors": len(ckpt.tensors),
        "parameters": int(
            sum(math.prod(w.shape) for w in weights.values()) + sum(math.prod(ckpt.info(n).shape) for n in dense)
        ),
        "bytes": int(sum(size.values())),
        "dtypes": {d: {"tensors": c, "bytes": size[d]} for d, c in sorted(dtypes.items())},
        "layout": handler.name.value,
        "detected_by": why,
        "summary": handler.summary,
        "quantization_config": ckpt.quantization_config or None,
        "preset": None,
        "quantized": len(weights),
        "element": ", ".join(dict.fromkeys(e for e, _ in groups)) or None,
        "block": ", ".join(dict.fromkeys(b for _, b in groups)) or None,
        "scale_storage": sorted({ckpt.info(w.parts["scale"]).dtype for w in weights.values() if "scale" in w.parts}),
        "scales_all_powers_of_two": None,
        "dense_tensors": len(dense),
        "dense_examples": dense[:8],
    }
    described = handler.describe(ckpt, weights)
    out.update(described)
    out["warnings"] = warnings + described.get("warnings", [])
    # what each engine's loader does to these weights, as the engine transforms plan it (headers only)
    out["engines"] = engines.verdicts(weights.values(), engines.Context.from_config(ckpt.config)) if weights else {}
    return out
