"""A Ray cluster as the shard executor of `fp8port.checkpoint.convert.run`.

`run` plans on the driver and calls `submit(write_shard, src, plan, i, temp_path)` per shard;
the task reads SRC by path and writes one shard, so every node must see SRC and DST's parent
at the same paths (shared storage). The driver renames, journals, writes the index and
publishes DST, exactly as in a local run, which is why the bytes and `--resume` are the same.

Retries: Ray reruns a task whose worker died (OOM, node lost, kill -9) and, here, one that
raised an OSError (a storage hiccup). An Fp8portError is bad data or options: a rerun would
fail the same way, so it is raised at once. A task may therefore run more than once, even
twice at the same time (a node cut off from the cluster may still be writing), so each
attempt writes a file of its own and renames it onto the temporary name only when complete:
whichever attempt renames last, the file is whole and its digest is the one returned.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import socket
import time
from pathlib import Path

from ..errors import Fp8portError

INSTALL = "pip install 'fp8port[ray]'"
# OSError includes ConnectionError and the errno family a network file system raises now and then
TRANSIENT = (OSError,)


class RayUnavailableError(Fp8portError):
    """--ray was asked for, but Ray is not installed or the cluster cannot be reached."""


def require_ray():
    try:
        import ray
    except ImportError as e:
        raise RayUnavailableError(
            f"--ray needs Ray, which is not installed ({e}); install it with: {INSTALL}"
        ) from None
    return ray


def probe(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on a host:port nobody answers at: ray.init would retry for minutes."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms are Ray's to resolve
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise RayUnavailableError(
            f"no Ray cluster answers at {address!r} ({e}); start one with "
            "`ray start --head` and pass the address it prints"
        ) from None


def attempt_path(path: Path) -> Path:
    """A name of this attempt's own, beside `path`; ends in .partial so that a leftover one is
    swept when the staging folder is published."""
    return path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")


def stale_attempts(path: Path) -> list[Path]:
    return [Path(p) for p in glob.glob(glob.escape(str(path)) + ".*.partial")]


def run_attempt(fn, threads: int, *args):
    """The body of one Ray task: fn(..., path) writes `path` and returns (reports, sha256)."""
    import numba

    # a worker process may run many tasks; each gets the cores Ray reserved for it, not all of them
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    *head, path = args
    if not isinstance(path, Path):
        return fn(*args)
    mine = attempt_path(path)
    try:
        out = fn(*head, mine)
        os.replace(mine, path)
        return out
    finally:
        mine.unlink(missing_ok=True)


class RayFuture:
    """What `submit` returns: `.result()` as concurrent.futures has it."""

    def __init__(self, executor: RayExecutor, ref, path):
        self._executor, self._ref, self._path = executor, ref, path

    def done(self) -> bool:
        ready, _ = self._executor.ray.wait([self._ref], timeout=0)
        return bool(ready)

    def result(self):
        ray = self._executor.ray
        try:
            out = ray.get(self._ref)
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, Fp8portError):
                raise e.cause from None  # one clean line for the CLI, not a remote traceback
            raise
        finally:
            self._executor._pending.discard(self._ref)
        if isinstance(self._path, Path):
            for p in stale_attempts(self._path):  # left by attempts whose worker was killed
                p.unlink(missing_ok=True)
        return out


class RayExecutor:
    """`submit(fn, *args)` runs fn(*args) as a Ray task. With no address, a local cluster is
    started in this process (num_cpus: all by default) and stopped at shutdown; otherwise this
    process joins the cluster at `address` ("auto": the one `ray start` set up on this node)
    and leaves it running. If Ray is already initialised in this process, that is used as is."""

    def __init__(
        self, address: str | None = None, *, num_cpus: int | None = None, max_retries: int = 3, cpus_per_task: int = 1
    ):
        self.ray = ray = require_ray()
        self._owns = not ray.is_initialized()
        t0 = time.perf_counter()
        if self._owns:
            kw = dict(include_dashboard=False, logging_level="WARNING", configure_logging=True)
            try:
                if address is None:  # "local": a new cluster even if `ray start` left one on this node
                    ray.init(address="local", num_cpus=num_cpus, **kw)
                else:
                    probe(address)
                    ray.init(address=address, **kw)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise RayUnavailableError(
                    f"cannot {'start' if address is None else 'reach'} a Ray cluster"
                    f"{'' if address is None else f' at {address!r}'}: {e}"
                ) from None
        self.startup_s = time.perf_counter() - t0
        self.address = address
        self.cpus_per_task = cpus_per_task
        self._task = ray.remote(run_attempt).options(
            num_cpus=cpus_per_task, max_retries=max_retries, retry_exceptions=list(TRANSIENT)
        )
        self._pending: set = set()
        self._shared: dict[int, tuple[object, object]] = {}  # id(obj) -> (obj, ObjectRef)

    def describe(self) -> str:
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        cpus = int(self.ray.cluster_resources().get("CPU", 0))
        where = "local cluster" if self.address is None and self._owns else f"cluster {self.address or '(joined)'}"
        return (
            f"ray: {where}, {cpus} CPU(s) on {len(nodes)} node(s), {self.cpus_per_task} per shard task; "
            f"connected in {self.startup_s:.1f} s"
        )

    def _arg(self, a):
        if isinstance(a, Path):
            return a.absolute()  # the workers' working folder is not ours
        if a is None or isinstance(a, (str, bytes, int, float, bool)):
            return a
        # the plan goes into the object store once, not once per shard
        if id(a) not in self._shared:
            self._shared[id(a)] = (a, self.ray.put(a))
        return self._shared[id(a)][1]

    def submit(self, fn, *args) -> RayFuture:
        args = tuple(self._arg(a) for a in args)
        ref = self._task.remote(fn, self.cpus_per_task, *args)
        self._pending.add(ref)
        return RayFuture(self, ref, args[-1] if args else None)

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop tasks whose results nobody will collect (the run failed or was interrupted), so that
        no writer is left in the staging folder, then leave the cluster if we started or joined it."""
        ray, pending = self.ray, list(self._pending)
        if pending and ray.is_initialized():
            for ref in pending:
                ray.cancel(ref, force=True)
            ray.wait(pending, num_returns=len(pending), timeout=timeout)
        self._pending.clear()
        self._shared.clear()
        if self._owns and ray.is_initialized():
            ray.shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


@contextlib.contextmanager
def executor_from_option(value: str | None, *, log=None):
    """The executor for the CLI's `--ray [ADDRESS]`: None without it; a local cluster for a bare
    `--ray` ("local"); otherwise the cluster at ADDRESS. Shut down when the block ends."""
    if value is None:
        yield None
        return
    with RayExecutor(None if value == "local" else value) as ex:
        if log:
            log(ex.describe())
        yield ex
