"""The streaming pipeline behind `convert`, `dequant` and `rescale`.

A conversion is first planned (every output tensor's name, dtype and shape is known
before any data is read), then written shard by shard into a staging folder: each shard
under a temporary name, renamed when complete and recorded in the journal, so that an
interrupted run continues with `resume=True` and ends byte-identical. One source tensor
is in memory at a time. Shard jobs are independent (`write_shard`), which is what lets
a pool of processes or a Ray cluster run them.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import (CheckpointError, ConversionError, Fp8portError, NonFiniteError, ResourceError,
                      UnknownNameError)
from ..quant import dequantize, quantize
from ..quant.tensor import QuantizedTensor
from .folder import INDEX, SINGLE, Checkpoint
from .layouts import (SCALE_NAME, Layout, Target, all_powers_of_two, check_grids, detect, grid, logical_shape,
                      quantized_weights, read_quantized, reader_scheme)
from .safetensors_io import DTYPES, Entry, nbytes, write_file
from .selection import quantizable
from .staging import Staging, check_destination, sha256_file, write_json_atomic

SUMMARY = "fp8port-summary.json"
DENSE = {"bf16": ("BF16", "bfloat16"), "fp16": ("F16", "float16"), "fp32": ("F32", "float32")}


class Action(enum.Enum):
    COPY = "copy"
    QUANTIZE = "quantize"
    DEQUANTIZE = "dequantize"
    REQUANTIZE = "requantize"  # fp32 block scales -> UE8M0 (what vLLM/SGLang do at load time)
    REPLICATE = "replicate-scales"  # UE8M0 128x128 -> MXFP8 1x32: codes kept, scale bytes copied


class NonFinitePolicy(enum.Enum):
    ERROR = "error"
    KEEP = "keep"  # NaN/Inf blocks become NaN scales
    ZERO = "zero"  # non-finite weights are set to 0 first

    @classmethod
    def parse(cls, v):
        if isinstance(v, cls):
            return v
        try:
            return cls(str(v).lower())
        except ValueError:
            raise UnknownNameError("non-finite policy", v, [m.value for m in cls]) from None


@dataclass(frozen=True)
class Job:
    action: Action
    source: str
    scale: str | None
    outputs: tuple[tuple[str, str, tuple[int, ...]], ...]  # (name, safetensors dtype, shape)

    @property
    def nbytes(self) -> int:
        return sum(nbytes(d, s) for _, d, s in self.outputs)


@dataclass(frozen=True)
class Options:
    """Everything that decides the output bytes (part of the resume fingerprint)."""

    mode: str  # convert | dequant | rescale
    preset: str | None = None
    layout: str | None = None
    scale_dtype: str | None = None
    dtype: str = "bf16"  # dequant output
    to: str | None = None  # rescale target
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    shard_size: int = 5 * 1024**3
    nonfinite: str = "error"
    activation_scales: str | None = None  # JSON of calibrated input scales (AscendV1 W8A8 static)


@dataclass
class Plan:
    src: Path
    options: Options
    jobs: list[Job]
    shards: list[list[int]]  # job indices per shard
    shard_names: list[str]
    config: dict | None
    target: Target | None = None
    read_layout: Layout = Layout.DENSE
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "mode": self.options.mode, "options": asdict(self.options),
            "layout_in": self.read_layout.value,
            "layout_out": self.target.layout.value if self.target else "dense",
            "shards": {n: [self.jobs[i].source for i in idx] for n, idx in zip(self.shard_names, self.shards)},
            "tensors": [{"source": j.source, "action": j.action.value,
                         "outputs": [{"name": n, "dtype": d, "shape": list(s)} for n, d, s in j.outputs]}
                        for j in self.jobs],
            "notes": self.notes,
        }


# ---- planning ------------------------------------------------------------------------------


def _shard(jobs: list[Job], shard_size: int) -> tuple[list[list[int]], list[str]]:
    shards, cur, size = [], [], 0
    for i, j in enumerate(jobs):
        if cur and size + j.nbytes > shard_size:
            shards.append(cur)
            cur, size = [], 0
        cur.append(i)
        size += j.nbytes
    if cur or not shards:
        shards.append(cur)
    n = len(shards)
    names = [SINGLE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    return shards, names


def _check_packable(name, shape, target):
    el = target.scheme.element
    if el.bits < 8 and math.prod(shape) * el.bits % 8:
        raise CheckpointError(f"tensor {name!r} {list(shape)}: {math.prod(shape)} {el.name} codes do not "
                              "fill whole bytes; exclude it (--exclude) or choose an 8-bit preset")


def plan_convert(ckpt: Checkpoint, opts: Options) -> Plan:
    if opts.layout and Layout.parse(opts.layout) is Layout.ASCEND:  # reads dense and FP8 sources
        from . import ascend

        return ascend.plan_convert(ckpt, opts)
    if detect(ckpt) is not Layout.DENSE:
        raise ConversionError(f"{ckpt.root} is already quantized ({detect(ckpt).value} layout); "
                              "use `fp8port dequant` or `fp8port rescale`")
    target = Target.choose(opts.preset, opts.layout, opts.scale_dtype)
    jobs, ignored = [], []
    for name, (_, info) in ckpt.tensors.items():
        if quantizable(name, info.dtype, info.shape, opts.include, opts.exclude):
            _check_packable(name, info.shape, target)
            target.scheme.block.extents(info.shape)
            jobs.append(Job(Action.QUANTIZE, name, None, tuple(target.entries(name, info.shape))))
        else:
            if name.endswith(".weight") and len(info.shape) == 2 and "embed" not in name:
                ignored.append(name[: -len(".weight")])
            jobs.append(Job(Action.COPY, name, None, ((name, info.dtype, info.shape),)))
    if "lm_head" not in ignored:  # a tied lm_head has no tensor but is a Linear all the same
        ignored.append("lm_head")
    config = dict(ckpt.config or {})
    config["quantization_config"] = target.quantization_config(ignored)
    shards, names = _shard(jobs, opts.shard_size)
    plan = Plan(ckpt.root, opts, jobs, shards, names, config, target, Layout.DENSE)
    if not any(j.action is Action.QUANTIZE for j in jobs):
        plan.notes.append("no tensor matched the quantization rules: the output is a copy")
    return plan


def plan_dequant(ckpt: Checkpoint, opts: Options) -> Plan:
    layout = detect(ckpt)
    if layout is Layout.DENSE:
        raise ConversionError(f"{ckpt.root} holds no quantized weights; nothing to dequantize")
    if opts.dtype not in DENSE:
        raise UnknownNameError("dtype", opts.dtype, DENSE)
    if layout is Layout.ASCEND:
        from . import ascend

        return ascend.plan_dequant(ckpt, opts)
    scheme = reader_scheme(ckpt, layout)  # the config first: its errors explain the rest
    pairs = quantized_weights(ckpt, layout)
    scales = set(pairs.values()) | {n for n in ckpt.tensors if n.endswith(".weight_tensor_scale")}
    out_dtype = DENSE[opts.dtype][0]
    check_grids(ckpt, pairs, scheme)
    jobs = []
    for name, (_, info) in ckpt.tensors.items():
        if name in pairs:
            jobs.append(Job(Action.DEQUANTIZE, name, pairs[name], ((name, out_dtype, logical_shape(info, scheme)),)))
        elif name not in scales:
            jobs.append(Job(Action.COPY, name, None, ((name, info.dtype, info.shape),)))
    config = dict(ckpt.config or {})
    config.pop("quantization_config", None)
    shards, names = _shard(jobs, opts.shard_size)
    return Plan(ckpt.root, opts, jobs, shards, names, config, None, layout)


def plan_rescale(ckpt: Checkpoint, opts: Options) -> Plan:
    layout = detect(ckpt)
    if layout not in (Layout.DEEPSEEK, Layout.COMPRESSED_TENSORS):
        raise ConversionError(f"rescale reads FP8 block checkpoints (deepseek or compressed-tensors layout); "
                              f"{ckpt.root} is {layout.value}")
    to = (opts.to or "").lower()
    if to == "ue8m0":
        target, action = Target.choose("deepseek-v3.1", "deepseek", opts.scale_dtype), Action.REQUANTIZE
    elif to == "mxfp8":
        target, action = Target.choose("mxfp8"), Action.REPLICATE
    else:
        raise UnknownNameError("rescale target", opts.to, ["ue8m0", "mxfp8"])
    src_scheme = reader_scheme(ckpt, layout)
    pairs = quantized_weights(ckpt, layout)
    check_grids(ckpt, pairs, src_scheme)
    if action is Action.REPLICATE and src_scheme.block.size[1] % target.scheme.block.size[0]:
        raise ConversionError(f"{src_scheme.block} blocks do not split into 1x{target.scheme.block.size[0]} blocks")
    jobs = []
    for name, (_, info) in ckpt.tensors.items():
        if name in pairs:
            jobs.append(Job(action, name, pairs[name], tuple(target.entries(name, info.shape))))
        elif name not in set(pairs.values()):
            jobs.append(Job(Action.COPY, name, None, ((name, info.dtype, info.shape),)))
    config = dict(ckpt.config or {})
    qc = target.quantization_config(list(ckpt.quantization_config.get("ignore", [])))
    if action is Action.REPLICATE:
        qc["derived_from"] = f"{layout.value} {src_scheme.block} power-of-two scales, replicated per 1x32 block"
    config["quantization_config"] = qc
    shards, names = _shard(jobs, opts.shard_size)
    return Plan(ckpt.root, opts, jobs, shards, names, config, target, layout)


PLANNERS = {"convert": plan_convert, "dequant": plan_dequant, "rescale": plan_rescale}


def make_plan(src, opts: Options) -> Plan:
    return PLANNERS[opts.mode](Checkpoint.open(src), opts)


def fingerprint(plan: Plan, ckpt: Checkpoint) -> str:
    src = [(n, ckpt.tensors[n][0].name, i.dtype, list(i.shape), i.begin, i.end)
           for n, (_, i) in ckpt.tensors.items()]
    files = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in ckpt.files]
    blob = json.dumps({"v": __version__, "plan": plan.to_json(), "src": src, "files": files}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# ---- producing tensors ----------------------------------------------------------------------


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
           "sqnr_db": _sqnr(w, err)}
    return plan.target.arrays(q2), rep


def _sqnr(w, err) -> float | None:
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


# ---- running --------------------------------------------------------------------------------


@dataclass
class Result:
    dst: Path
    plan: Plan
    summary: dict
    resumed_shards: int


def _print_progress(event: str, **kw):
    if event == "tensor":
        job: Job = kw["job"]
        outs = ", ".join(f"{d}{list(s)}" for _, d, s in job.outputs)
        print(f"[{kw['done']}/{kw['total']}] {job.source}: {job.action.value} -> {outs}", file=sys.stderr)
    elif event == "shard":
        print(f"  wrote {kw['name']} ({kw['index'] + 1}/{kw['count']})", file=sys.stderr)


def run(src, dst, opts: Options, *, resume=False, overwrite=False, workers=1, executor=None, verify=False,
        progress=_print_progress, after_shard=None) -> Result:
    """Plan and execute a conversion. Shards are written in this process, by `workers` local
    processes, or by any `executor` with `submit(fn, *args) -> future` (the Ray backend).
    progress(event, **info) gets per-tensor and per-shard events (None for silence);
    after_shard(i) is a hook for tests that interrupt a run."""
    src, dst = Path(src), Path(dst)
    check_destination(src, dst, overwrite)
    ckpt = Checkpoint.open(src)
    plan = PLANNERS[opts.mode](ckpt, opts)
    try:
        stage = Staging(dst, fingerprint(plan, ckpt), resume)
    except OSError as e:
        raise ResourceError(f"cannot create the staging folder beside {dst}: {e.strerror or e}") from None
    try:
        todo = [i for i, n in enumerate(plan.shard_names) if n not in stage.done]
        resumed = len(plan.shards) - len(todo)
        total, done = len(plan.jobs), sum(len(plan.shards[i]) for i in range(len(plan.shards)) if i not in todo)
        reports: dict = {}

        def finish(i, rep, digest):
            name = plan.shard_names[i]
            stage.temp_path(name).replace(stage.shard_path(name))
            stage.mark_done(name, digest)
            reports.update(rep)
            if progress:
                progress("shard", name=name, index=i, count=len(plan.shards))
            if after_shard:
                after_shard(i)

        own = executor is None and workers > 1 and len(todo) > 1
        pool = _local_pool(workers) if own else executor
        if pool is not None:
            try:
                futs = {i: pool.submit(write_shard, src, plan, i, stage.temp_path(plan.shard_names[i]))
                        for i in todo}
                for i in todo:  # in order, so the journal grows as a sequential run's would
                    finish(i, *futs[i].result())
            finally:
                if own:
                    pool.shutdown(cancel_futures=True)
        else:
            for i in todo:
                def on_tensor(job, i=i):
                    nonlocal done
                    done += 1
                    if progress:
                        progress("tensor", job=job, done=done, total=total)
                finish(i, *write_shard(src, plan, i, stage.temp_path(plan.shard_names[i]), on_tensor))
        summary = _finish(stage, ckpt, plan, reports)
        if verify:
            summary["verify"] = verify_output(ckpt, Checkpoint.open(stage.dir), plan)
            write_json_atomic(stage.dir / SUMMARY, summary)
            if not summary["verify"]["ok"]:
                raise ConversionError(f"--verify failed: {summary['verify']['failures'][:3]}")
        stage.publish(overwrite)
    except OSError as e:
        # the machine refused (disk full, permissions): keep the finished shards for --resume
        where = e.filename or stage.dir
        raise ResourceError(f"{where}: {e.strerror or e}; the finished shards are kept in {stage.dir}: "
                            "free the resource and rerun the same command with --resume") from None
    except Fp8portError:
        # bad data or options: a rerun would fail the same way, so leave nothing behind. An
        # interruption keeps the staging folder for --resume.
        stage.discard()
        raise
    finally:
        stage.release()
    return Result(dst, plan, summary, resumed)


def _worker_init(threads: int) -> None:
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


def _local_pool(workers: int) -> ProcessPoolExecutor:
    # spawn, not fork: the parent already runs OpenMP threads (Numba, torch), and a forked
    # child of such a process may hang. Cores are shared out so that workers do not oversubscribe.
    cores = os.cpu_count() or 1
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(max(1, cores // workers),))


def _finish(stage: Staging, ckpt: Checkpoint, plan: Plan, reports: dict) -> dict:
    """Index, config, the source's other files, and the summary; all into staging."""
    if plan.target is not None and plan.target.layout is Layout.ASCEND:
        from . import ascend

        ascend.write_metadata(stage.dir, plan)  # description file, msModelSlim's index name
    elif len(plan.shard_names) > 1:
        weight_map = {n: plan.shard_names[si] for si, idx in enumerate(plan.shards)
                      for ji in idx for n, _, _ in plan.jobs[ji].outputs}
        total = sum(j.nbytes for j in plan.jobs)
        write_json_atomic(stage.dir / INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})
    if plan.config is not None:
        write_json_atomic(stage.dir / "config.json", plan.config)
    for f in ckpt.other_files():
        rel = f.relative_to(ckpt.root)
        (stage.dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, stage.dir / rel)
    summary = {
        "tool": f"fp8port {__version__}",
        "mode": plan.options.mode,
        "options": asdict(plan.options),
        "source": str(plan.src.resolve()),
        "layout_in": plan.read_layout.value,
        "layout_out": plan.target.layout.value if plan.target else "dense",
        "preset": plan.target.preset if plan.target else None,
        "tensors": {j.source: {"action": j.action.value, **reports.get(j.source, {})} for j in plan.jobs},
        "counts": {a.value: sum(j.action is a for j in plan.jobs) for a in Action},
        "bytes_written": sum(j.nbytes for j in plan.jobs),
        "files": {n: stage.done[n] for n in plan.shard_names},
        "notes": plan.notes,
    }
    write_json_atomic(stage.dir / SUMMARY, summary)
    return summary


def verify_output(src: Checkpoint, out: Checkpoint, plan: Plan) -> dict:
    """Reload every written tensor and compare it with the source: bytes for copies, exact
    values where the path is lossless, error statistics where it is not."""
    failures, stats = [], {}
    out_layout = plan.target.layout if plan.target else Layout.DENSE
    if Layout.ASCEND in (out_layout, plan.read_layout):
        from . import ascend

        return ascend.verify_output(src, out, plan)
    for job in plan.jobs:
        n = job.source
        if job.action is Action.COPY:
            if not np.array_equal(src.read(n).view(np.uint8), out.read(n).view(np.uint8)):
                failures.append(f"{n}: copy differs")
            continue
        if out_layout is Layout.DENSE:
            got = out.read(n).astype(np.float32)
        else:
            sname = n[: -len(".weight")] + "." + SCALE_NAME[out_layout]
            got = np.asarray(dequantize(read_quantized(out, n, sname, out_layout, reader_scheme(out, out_layout)),
                                        "float32"))
        if plan.read_layout is Layout.DENSE:
            ref = src.read(n).astype(np.float32)
        else:
            ref = np.asarray(dequantize(read_quantized(src, n, job.scale, plan.read_layout,
                                                       reader_scheme(src, plan.read_layout)), "float32"))
        if out_layout is Layout.DENSE:  # dequant: compare in the output dtype
            ref = ref.astype(DTYPES[job.outputs[0][1]][0]).astype(np.float32)
        exact = bool(np.array_equal(got, ref, equal_nan=True))
        lossless = job.action in (Action.DEQUANTIZE, Action.REPLICATE)
        err = got.astype(np.float64) - ref
        stats[n] = {"exact": exact, "max_abs_error": float(np.nanmax(np.abs(err))) if err.size else 0.0,
                    "sqnr_db": _sqnr(ref, np.nan_to_num(err))}
        if lossless and not exact:
            failures.append(f"{n}: expected an exact round trip, max error {stats[n]['max_abs_error']:.3g}")
    return {"ok": not failures, "failures": failures, "tensors": stats}
