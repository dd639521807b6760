"""Producing a shard: each job's arrays from the source, streamed into one safetensors file."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import engines
from ..errors import ConversionError, NonFiniteError
from ..quant import QuantizedTensor, dequantize
from ..quant.metrics import max_abs_error, sqnr_db
from ..quant.relayout import relayout, widen
from . import layouts
from .folder import Checkpoint
from .layouts import Action, Job, NonFinitePolicy
from .layouts.base import LayoutHandler
from .plan import Plan
from .safetensors_io import DTYPES, Entry, write_file
from .staging import sha256_file


def dense_source(ckpt: Checkpoint, name: str, policy: NonFinitePolicy) -> np.ndarray:
    """A dense source tensor, its non-finite values zeroed under --nonfinite zero."""
    x = ckpt.read(name)
    if policy is NonFinitePolicy.ZERO:
        x32 = x.astype(np.float32)
        if not np.isfinite(x32).all():
            x = np.where(np.isfinite(x32), x32, 0).astype(x.dtype)
    return x


def _encode(plan: Plan, job: Job, x, where: str) -> QuantizedTensor:
    try:
        return plan.writer.encode(job.source, x, job.scheme, plan.options.nonfinite)
    except NonFiniteError as e:
        bad = np.argwhere(~np.isfinite(np.asarray(x, np.float32)))
        block = ""
        if len(bad):
            ext = job.scheme.block.extents(np.shape(x))
            block = f" in block {tuple(int(i) // e for i, e in zip(bad[0], ext))} of {job.scheme.block}"
        raise NonFiniteError(f"{where}: {e}{block} (use --nonfinite keep or zero)") from None


def _error(ref: np.ndarray, q: QuantizedTensor | np.ndarray) -> dict:
    """SQNR and max |error| of a lossy step (its codes, or the values it gives), over the finite values."""
    got = np.asarray(q if isinstance(q, np.ndarray) else dequantize(q, "float32"), np.float32)
    fin = np.isfinite(got) & np.isfinite(ref)
    return {"sqnr_db": round(sqnr_db(ref[fin], got[fin]), 3), "max_abs_error": max_abs_error(ref[fin], got[fin])}


def _dense(x: np.ndarray, dtype: str, exact: bool, where: str) -> tuple[np.ndarray, dict]:
    """float32 values written in a dense dtype; whether that kept every value (a typed error under --exact)."""
    out = x.astype(DTYPES[dtype][0])
    back = out.astype(np.float32)
    same = (back == x) | (np.isnan(back) & np.isnan(x))
    if same.all():
        return out, {"exact": True}
    if exact:
        i = tuple(int(k) for k in np.argwhere(~same)[0])
        raise ConversionError(
            f"{where}: --exact: {dtype} cannot hold {float(x[i])!r} at index {i} (it becomes "
            f"{float(back[i])!r}); drop --exact, or choose a wider type"
        )
    fin = np.isfinite(x) & np.isfinite(back)
    return out, {
        "exact": False,
        "sqnr_db": round(sqnr_db(x[fin], back[fin]), 3),
        "max_abs_error": max_abs_error(x[fin], back[fin]),
    }


def produce(job: Job, ckpt: Checkpoint, plan: Plan) -> tuple[list[np.ndarray], dict]:
    """The arrays of a job's outputs, and its per-tensor report."""
    if job.action is Action.COPY:  # in the dtype the writer chose (Writer.arrange), where it differs
        return [ckpt.read(job.source).astype(DTYPES[job.outputs[0][1]][0], copy=False)], {}
    reader = layouts.get(plan.read_layout)
    where = f"{ckpt.tensors[job.weight.tensors[0] if job.weight else job.source][0]}: tensor {job.source!r}"
    dtype = job.outputs[0][1]
    if job.action is Action.CAST:
        a, rep = _dense(
            dense_source(ckpt, job.source, plan.options.nonfinite).astype(np.float32), dtype, plan.options.exact, where
        )
        return [a], rep
    if job.action is Action.DEQUANTIZE:
        if plan.options.exact:  # values in float32 first, to check that the dtype holds them
            a, rep = _dense(np.asarray(reader.values(ckpt, job.weight), np.float32), dtype, True, where)
            return [a], rep
        return [reader.values(ckpt, job.weight, DTYPES[dtype][0].name)], {}
    if job.action is Action.ENGINE:  # what the engine of `rescale --to ENGINE` holds after loading
        engine, ctx = engines.get(plan.options.to), engines.Context.from_config(ckpt.config)
        q = reader.read(ckpt, job.weight)
        held = engine.apply(engine.plan(job.weight, ctx), q, ctx)
        arrays = (
            plan.writer.arrays(job.source, held.q) if job.scheme is not None else [held.values.astype(DTYPES[dtype][0])]
        )
        return arrays, _error(np.asarray(reader.values(ckpt, job.weight), np.float32), held.values)
    if job.action in (Action.REPLICATE, Action.RECIPROCAL):
        src = reader.read(ckpt, job.weight)
        q = relayout(src, job.scheme)
        rep = {"exact": True}
        if job.action is Action.RECIPROCAL:
            a, b = (np.asarray(dequantize(t, "float32"), np.float32).view(np.uint32) for t in (src, q))
            moved = int(np.sum(a != b))
            rep = {"exact": moved == 0, "values_moved": moved, "tensor_scale": [src.tensor_scale, q.tensor_scale]}
        return plan.writer.arrays(job.source, q), {**rep, **plan.writer.report(job.source, q)}
    if job.action is Action.WIDEN:  # exact unless a tile spans 15+ binades: the report says which
        q, lossless = widen(reader.read(ckpt, job.weight), job.scheme)
        rep = {"exact": lossless, "lossless": lossless, **plan.writer.report(job.source, q)}
        if not lossless:
            rep.update(_error(np.asarray(reader.values(ckpt, job.weight), np.float32), q))
        return plan.writer.arrays(job.source, q), rep
    if job.action is Action.QUANTIZE:
        x = dense_source(ckpt, job.source, plan.options.nonfinite)
    else:  # REQUANTIZE: the source's exact values, quantized again
        x = np.asarray(reader.values(ckpt, job.weight), np.float32)
    q = _encode(plan, job, x, where)
    rep = dict(plan.writer.report(job.source, q))
    if job.action is Action.REQUANTIZE or plan.writer.measures_error:
        rep.update(_error(np.asarray(x, np.float32), q))
    return plan.writer.arrays(job.source, q), rep


# Bytes of a dequantized output per piece. Dequantizing a block of rows at a time lets the rows just made be
# hashed and written while the next are made, and pieces of one size recycle a few pool buffers, where
# whole-tensor outputs (86 MB in bench_convert) needed fresh ones the kernel must zero first (0.3-0.5 CPU s
# of dequant on the 2-vCPU VM of docs/conversion-io.md)
PIECE_BYTES = 8 << 20


def dequantized_pieces(q: QuantizedTensor, dtype: np.dtype, piece_bytes: int = PIECE_BYTES) -> Iterator[np.ndarray]:
    """`dequantize(q, dtype)` in consecutive slices along the first axis, each a whole number of scale
    blocks on that axis, so every value is the same product with the same scale (bit for bit).

    Args: q: a NumPy QuantizedTensor; dtype: the output's NumPy dtype; piece_bytes: about how large a slice.
    Returns: an iterator of arrays whose concatenation along axis 0 is the whole dequantized tensor.
    """
    if len(q.shape) < 2 or q.shape[0] == 0 or not isinstance(q.codes, np.ndarray) or q.scale.shape != q.grid:
        yield dequantize(q, dtype.name)
        return
    rows, bh = q.shape[0], q.scheme.block.extents(q.shape)[0]
    row_bytes = dtype.itemsize * math.prod(q.shape[1:])
    step = max(1, piece_bytes // max(1, row_bytes * bh)) * bh
    if step >= rows:
        yield dequantize(q, dtype.name)
        return
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        g = slice(r0 // bh, -(-r1 // bh))
        yield dequantize(
            replace(
                q, codes=q.codes[r0:r1], scale=q.scale[g], scale_fp32=q.scale_fp32[g], shape=(r1 - r0, *q.shape[1:])
            ),
            dtype.name,
        )


def _streamed(job: Job, ckpt: Checkpoint, plan: Plan):
    """A job's single output as pieces (dequant with the generic reader), or None: produce() it whole."""
    if job.action is not Action.DEQUANTIZE or plan.options.exact or len(job.outputs) != 1:
        return None
    reader = layouts.get(plan.read_layout)
    if type(reader).values is not LayoutHandler.values:  # a layout with its own dequantization
        return None
    return dequantized_pieces(reader.read(ckpt, job.weight), DTYPES[job.outputs[0][1]][0])


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
            if k == 0 and (pieces := _streamed(job, ckpt, plan)) is not None:
                if on_tensor:
                    on_tensor(job)
                return pieces
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
        write_file(path, entries, plan.writer.file_metadata)
    except BaseException:
        path.unlink(missing_ok=True)  # a half-written shard is worth nothing; free its space
        raise
    return reports, sha256_file(path)
