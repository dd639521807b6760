"""The streaming pipeline behind `convert`, `dequant` and `rescale`.

A conversion is first planned (every output tensor's name, dtype and shape is known
before any data is read), then written shard by shard into a staging folder: each shard
under a temporary name, renamed when complete and recorded in the journal, so that an
interrupted run continues with `resume=True` and ends byte-identical. One source tensor
is in memory at a time. Shard jobs are independent (`write_shard`), which is what lets
a pool of processes or a Ray cluster run them.

plan.py decides what is written, produce.py writes one shard, verify.py checks the output;
this module runs them: staging, journal, executors, index and summary, publishing.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import ConversionError, Fp8portError, ResourceError
from .folder import Checkpoint
from .layouts import Action, Job
from .plan import PLANNERS, SUMMARY, Options, Plan, fingerprint, make_plan
from .produce import produce, write_shard
from .staging import Staging, check_destination, sha256_file, write_json_atomic
from .verify import verify_output

__all__ = ["Options", "Plan", "Result", "make_plan", "run", "write_shard"]


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


def run(
    src,
    dst,
    opts: Options,
    *,
    resume=False,
    overwrite=False,
    workers=1,
    executor=None,
    verify=False,
    progress=_print_progress,
    after_shard=None,
) -> Result:
    """Plan and execute a conversion. Shards are written in this process, by `workers` local
    processes, or by any `executor` with `submit(fn, *args) -> future` (the Ray backend); a layout
    whose output is one file (GGUF) is written in this process.
    progress(event, **info) gets per-tensor and per-shard events (None for silence);
    after_shard(i) is a hook for tests that interrupt a run."""
    src, dst = Path(src), Path(dst)
    ckpt = Checkpoint.open(src)
    plan = PLANNERS[opts.mode](ckpt, opts)
    single = plan.writer.single_file
    check_destination(src, dst, overwrite, single)
    if single and executor is not None:
        raise ConversionError(f"{dst.name} is one file, written by one process: drop --ray")
    try:
        stage = Staging(dst, fingerprint(plan, ckpt), resume)
    except OSError as e:
        raise ResourceError(f"cannot create the staging folder beside {dst}: {e.strerror or e}") from None
    try:
        if single:
            summary, resumed = _write_file(stage, ckpt, plan, progress)
        else:
            summary, resumed = _write_shards(stage, src, ckpt, plan, workers, executor, progress, after_shard)
        if verify:
            out = Checkpoint.open(stage.shard_path(dst.name) if single else stage.dir)
            summary["verify"] = verify_output(ckpt, out, plan)
            if not single:
                write_json_atomic(stage.dir / SUMMARY, summary)
            if not summary["verify"]["ok"]:
                raise ConversionError(f"--verify failed: {summary['verify']['failures'][:3]}")
        stage.publish(overwrite, file=dst.name if single else None)
    except OSError as e:
        # the machine refused (disk full, permissions): keep the finished shards for --resume
        where = e.filename or stage.dir
        raise ResourceError(
            f"{where}: {e.strerror or e}; the finished shards are kept in {stage.dir}: "
            "free the resource and rerun the same command with --resume"
        ) from None
    except Fp8portError:
        # bad data or options: a rerun would fail the same way, so leave nothing behind. An
        # interruption keeps the staging folder for --resume.
        stage.discard()
        raise
    finally:
        stage.release()
    return Result(dst, plan, summary, resumed)


def _tensor_progress(plan: Plan, progress, done: int = 0):
    def on_tensor(job):
        nonlocal done
        done += 1
        if progress:
            progress("tensor", job=job, done=done, total=len(plan.jobs))

    return on_tensor


def _write_shards(stage, src, ckpt, plan, workers, executor, progress, after_shard) -> tuple[dict, int]:
    todo = [i for i, n in enumerate(plan.shard_names) if n not in stage.done]
    resumed = len(plan.shards) - len(todo)
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
            futs = {i: pool.submit(write_shard, src, plan, i, stage.temp_path(plan.shard_names[i])) for i in todo}
            for i in todo:  # in order, so the journal grows as a sequential run's would
                finish(i, *futs[i].result())
        finally:
            if own:
                pool.shutdown(cancel_futures=True)
    else:
        on_tensor = _tensor_progress(
            plan, progress, sum(len(plan.shards[i]) for i in range(len(plan.shards)) if i not in todo)
        )
        for i in todo:
            finish(i, *write_shard(src, plan, i, stage.temp_path(plan.shard_names[i]), on_tensor))
    return _finish(stage, ckpt, plan, reports), resumed


def _write_file(stage: Staging, ckpt: Checkpoint, plan: Plan, progress) -> tuple[dict, int]:
    """A one-file output (GGUF): written under a temporary name in the staging folder, then renamed."""
    name = stage.dst.name
    reports: dict = {}
    resumed = int(name in stage.done)
    if not resumed:
        on_tensor = _tensor_progress(plan, progress)

        def arrays():
            for job in plan.jobs:
                out, rep = produce(job, ckpt, plan)
                if rep:
                    reports[job.source] = rep
                on_tensor(job)
                yield out

        tmp = stage.temp_path(name)
        try:
            plan.writer.write_single(tmp, plan, arrays())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        with open(tmp, "rb") as f:  # the layout's own writer (gguf's) does not fsync; a shard's is fsynced
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
        tmp.replace(stage.shard_path(name))
        stage.mark_done(name, digest)
        if progress:
            progress("shard", name=name, index=0, count=1)
    return _summary(stage, plan, reports, [name]), resumed


def _worker_init(threads: int) -> None:
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


def _local_pool(workers: int):
    import multiprocessing  # here: a one-process run does not pay for importing it
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent already runs OpenMP threads (Numba, torch), and a forked
    # child of such a process may hang. Cores are shared out so that workers do not oversubscribe.
    cores = os.cpu_count() or 1
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init,
        initargs=(max(1, cores // workers),),
    )


def _finish(stage: Staging, ckpt: Checkpoint, plan: Plan, reports: dict) -> dict:
    """Index, config, side files, the source's other files, and the summary; all into staging."""
    index = plan.writer.index(plan)
    if index is not None:
        write_json_atomic(stage.dir / plan.writer.index_name, index)
    for name, obj in plan.writer.side_files(plan).items():
        write_json_atomic(stage.dir / name, obj)
    if plan.config is not None:
        write_json_atomic(stage.dir / "config.json", plan.config)
    for f in ckpt.other_files():
        rel = f.relative_to(ckpt.root)
        (stage.dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, stage.dir / rel)
    summary = _summary(stage, plan, reports, plan.shard_names)
    write_json_atomic(stage.dir / SUMMARY, summary)
    return summary


def _summary(stage: Staging, plan: Plan, reports: dict, files: list[str]) -> dict:
    return {
        "tool": f"fp8port {__version__}",
        "mode": plan.options.mode.value,
        "options": plan.options.to_json(),
        "source": str(plan.src.resolve()),
        "layout_in": plan.read_layout.value,
        "layout_out": plan.layout_out.value,
        "preset": plan.writer.label,
        "tensors": {j.source: {"action": j.action.value, **reports.get(j.source, {})} for j in plan.jobs},
        "counts": {a.value: sum(j.action is a for j in plan.jobs) for a in Action},
        "bytes_written": sum(j.nbytes for j in plan.jobs),
        "files": {n: stage.done[n] for n in files},
        "notes": plan.notes,
    }
