"""Weights that engines fuse into one GEMM (q/k/v, gate/up, ...) and so must share one NVFP4 tensor scale.

llm-compressor's `model_free_ptq` gives every complete set one global amax (its `_DEFAULT_FUSED_MAPPINGS_LIST`
in `entrypoints/model_free/microscale.py`, 0.14); ModelOpt's export shares `weight_scale_2` over the same
sets, and vLLM's fused qkv / gate_up layers keep one scale for all of them. A writer that quantizes NVFP4
asks `tensor_amax` once, at plan time: one streaming pass over the set members (one tensor in memory at a
time), so that every shard can be written on its own afterwards.
"""

from __future__ import annotations

import re

import numpy as np

from .base import Action, Job, Source

# (pattern with the set's prefix as group 1, number of members of a complete set)
SETS = (
    (re.compile(r"^(.*(?:attn|attention)\.)[qkv]_proj\.weight$"), 3),
    (re.compile(r"^(.*(?:attn|attention)\.)(?:wq_a|wkv_a_with_mqa)\.weight$"), 2),
    (re.compile(r"^(.*mlp\.)(?:gate|up)_proj\.weight$"), 2),
    (re.compile(r"^(.*)w[13]\.weight$"), 2),
)


def fused_sets(names) -> list[list[str]]:
    """The complete fused sets among `names` (an incomplete set is not fused, as in llm-compressor).
    Sets are found among all tensor names; only the quantized members share the amax."""
    found: dict[tuple, list[str]] = {}
    for n in names:
        for i, (pattern, _) in enumerate(SETS):
            m = pattern.match(n)
            if m:
                found.setdefault((i, m.group(1)), []).append(n)
                break
    return [v for (i, _), v in found.items() if len(v) == SETS[i][1]]


def _amax(source: Source, job: Job) -> np.float32:
    """max |x| over the finite values a job quantizes (the source tensor, or a quantized source's values)."""
    if job.weight is not None:
        from . import get

        x = np.asarray(get(source.layout).values(source.ckpt, job.weight), np.float32)
    else:
        x = source.ckpt.read(job.source).astype(np.float32)
    a = np.abs(x[np.isfinite(x)]) if x.size else x
    return np.float32(a.max()) if a.size else np.float32(0)


def tensor_amax(source: Source, jobs: list[Job]) -> dict[str, float]:
    """The amax each quantized job's tensor scale comes from: its fused set's, or (absent) its own.

    Only jobs that quantize from values (quantize, requantize) are read; re-laid out weights keep theirs."""
    todo = {j.source: j for j in jobs if j.action in (Action.QUANTIZE, Action.REQUANTIZE)}
    out = {}
    for group in fused_sets(j.source for j in jobs):  # sets by name; the members quantized share
        group = [n for n in group if n in todo]
        if len(group) > 1:
            amax = max(_amax(source, todo[n]) for n in group)
            out.update(dict.fromkeys(group, float(amax)))
    return out
