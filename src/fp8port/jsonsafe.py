"""Strict JSON at the boundary: non-finite floats (an exact tensor's +inf SQNR) become null."""

from __future__ import annotations

import math


def json_safe(obj):
    """A copy of `obj` (dicts, lists, tuples, scalars) with NaN and +-inf replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
