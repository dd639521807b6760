"""Producing a shard: each job's arrays from the source, streamed into one safetensors file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConversionError, NonFiniteError
from ..quant import dequantize, quantize
from ..quant.tensor import QuantizedTensor
from .folder import Checkpoint
from .layouts import Layout, Target, all_powers_of_two, grid, read_quantized, reader_scheme
from .plan import DENSE, Action, Job, NonFinitePolicy, Plan
from .safetensors_io import DTYPES, Entry, write_file
from .staging import sha256_file

def _dense_out(arr: np.ndarray, dtype: str) -> np.ndarray:
    return np.asarray(arr).astype(DTYPES[dtype][0], copy=False)


def _source_weight(ckpt, name, policy: NonFinitePolicy) -> np.ndarray:
    x = ckpt.read(name)
    if policy is NonFinitePolicy.ZERO:
        x32 = x.astype(np.float32)
        if not np.isfinite(x32).all():
            x = np.where(np.isfinite(x32), x32, 0).astype(x.dtype)
    return x


def _quantize_weight(x, scheme, policy: NonFinitePolicy, where: str) -> QuantizedTensor:
    try:
        return quantize(x, scheme, role="weight", nonfinite="propagate" if policy is NonFinitePolicy.KEEP else "error")
    except NonFiniteError as e:
        bad = np.argwhere(~np.isfinite(np.asarray(x, np.float32)))
        block = ""
        if len(bad):
            ext = scheme.block.extents(np.shape(x))
            block = f" in block {tuple(int(i) // e for i, e in zip(bad[0], ext))} of {scheme.block}"
        raise NonFiniteError(f"{where}: {e}{block} (use --nonfinite keep or zero)") from None


def _replicate(q: QuantizedTensor, target: Target) -> list[np.ndarray]:
    """UE8M0 128x128 scales -> one E8M0 byte per 1x32 block: exact, codes unchanged."""
    from ..quant import storage as st

    s = np.asarray(q.scale_fp32, np.float32)
    if not all_powers_of_two(s):
        raise ConversionError("scales are not all powers of two: replicating them onto 1x32 blocks would "
                              "not be exact; rescale --to ue8m0 first")
    n, k = q.shape
    bm, bn = q.scheme.block.size
    g = grid(q.shape, target.scheme)
    rows = np.arange(n) // bm
    cols = (np.arange(g[1]) * target.scheme.block.size[0]) // bn
    return [np.asarray(q.codes, np.uint8), st.store(s[rows][:, cols], target.scheme.storage)]


def produce(job: Job, ckpt: Checkpoint, plan: Plan) -> tuple[list[np.ndarray], dict]:
    """The arrays of a job's outputs, and its per-tensor report."""
    opts = plan.options
    where = f"{ckpt.tensors[job.source][0]}: tensor {job.source!r}"
    if Layout.ASCEND in (plan.read_layout, plan.target and plan.target.layout):
        from . import ascend

        return ascend.produce(job, ckpt, plan)
    if job.action is Action.COPY:
        return [ckpt.read(job.source)], {}
    if job.action is Action.QUANTIZE:
        x = _source_weight(ckpt, job.source, NonFinitePolicy.parse(opts.nonfinite))
        q = _quantize_weight(x, plan.target.scheme, NonFinitePolicy.parse(opts.nonfinite), where)
        return plan.target.arrays(q), {}
    q = read_quantized(ckpt, job.source, job.scale, plan.read_layout, reader_scheme(ckpt, plan.read_layout))
    if job.action is Action.DEQUANTIZE:
        return [_dense_out(dequantize(q, DENSE[opts.dtype][1]), job.outputs[0][1])], {}
    if job.action is Action.REPLICATE:
        return _replicate(q, plan.target), {"exact": True}
    w = dequantize(q, "float32")
    q2 = _quantize_weight(w, plan.target.scheme, NonFinitePolicy.KEEP, where)
    err = np.asarray(dequantize(q2, "float32"), np.float64) - w
    rep = {"max_abs_error": float(np.abs(err).max()) if err.size else 0.0,
           "sqnr_db": sqnr(w, err)}
    return plan.target.arrays(q2), rep


def sqnr(w, err) -> float | None:
    e = float(np.sum(err**2))
    return None if e == 0 else round(float(10 * np.log10(np.sum(np.asarray(w, np.float64) ** 2) / e)), 3)


def write_shard(src: Path, plan: Plan, shard: int, path: Path, on_tensor=None) -> tuple[dict, str]:
    """Write one shard to `path` (a temporary name); returns the per-tensor reports and the
    file's SHA-256. A pure function of its arguments: any process or machine that sees the
    same paths may run it, any number of times."""
    ckpt = Checkpoint.open(src)
    entries, reports = [], {}
    cache: dict[str, np.ndarray] = {}
    for ji in plan.shards[shard]:
        job = plan.jobs[ji]

        def make(job=job, k=0):
            if k == 0:
                arrays, rep = produce(job, ckpt, plan)
                if rep:
                    reports[job.source] = rep
                for (n, _, _), a in zip(job.outputs, arrays):
                    cache[n] = a
                if on_tensor:
                    on_tensor(job)
            return cache.pop(job.outputs[k][0])

        for k, (n, d, s) in enumerate(job.outputs):
            entries.append(Entry(n, d, s, lambda make=make, k=k: make(k=k)))
    try:
        write_file(path, entries, {"format": "pt"})
    except BaseException:
        path.unlink(missing_ok=True)  # a half-written shard is worth nothing; free its space
        raise
    return reports, sha256_file(path)
