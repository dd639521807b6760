"""Conversions on a real local Ray cluster (2 CPUs) end byte-identical to local runs: plain,
after a worker process is killed mid-shard, after an interruption and --resume, and for dequant."""

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'fp8port[ray]'")

from fp8port.checkpoint import Options, run  # noqa: E402
from fp8port.checkpoint.produce import write_shard  # noqa: E402
from fp8port.checkpoint.staging import staging_dir  # noqa: E402
from fp8port.distributed import RayExecutor  # noqa: E402
from fp8port.distributed.ray_executor import stale_attempts  # noqa: E402
from fp8port.errors import NonFiniteError  # noqa: E402

from ..checkpoint.conftest import tiny_llama, tree_digest, write_dense  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_dense(tmp_path_factory.mktemp("ray") / "src", tiny_llama(np.random.default_rng(9), layers=6), shards=3)


def _opts(**kw):
    return Options(**{"mode": "convert", "preset": "deepseek-v3.1", "shard_size": 600_000, **kw})


@pytest.fixture(scope="module")
def local(source, tmp_path_factory):
    """The same conversion run in this process: what every Ray run must reproduce."""
    dst = tmp_path_factory.mktemp("local") / "out"
    res = run(source, dst, _opts(), progress=None)
    assert len(res.plan.shards) >= 8
    return dst, tree_digest(dst)


def test_convert_is_byte_identical_and_progress_is_aggregated(source, local, tmp_path):
    events = []
    with RayExecutor() as ex:
        res = run(source, tmp_path / "out", _opts(), executor=ex, progress=lambda e, **kw: events.append((e, kw)))
    assert tree_digest(tmp_path / "out") == local[1]
    assert [kw["index"] for e, kw in events if e == "shard"] == list(range(len(res.plan.shards)))


class Killing:
    """An executor that hands one chosen shard to `write_or_die` instead of write_shard."""

    def __init__(self, inner, victim, log_dir):
        self.inner, self.victim, self.log_dir = inner, victim, log_dir

    def submit(self, fn, src, plan, shard, path):
        if shard == self.victim:
            fn, self.victim_path = functools.partial(write_or_die, self.log_dir), path
        return self.inner.submit(fn, src, plan, shard, path)


def write_or_die(log_dir, src, plan, shard, path):
    """First attempt: SIGKILL this worker once the shard's file is half written. Later attempts
    record whether the killed attempt's file was still there, then write the shard."""
    log, first = Path(log_dir) / "attempts.jsonl", Path(log_dir) / "killed-attempt"
    record = {"pid": os.getpid(), "path": str(path)}
    if first.exists():
        record["stale_seen"] = Path(first.read_text()).exists()
    with open(log, "a") as f:
        f.write(json.dumps(record) + "\n")

    def die(job):
        if not first.exists():
            first.write_text(str(path))
            os.kill(os.getpid(), signal.SIGKILL)

    return write_shard(src, plan, shard, path, on_tensor=die)


def test_killed_worker_is_retried_and_bytes_are_unchanged(source, local, tmp_path):
    dst, left = tmp_path / "out", []

    def check(i):  # the driver has just renamed shard i: no attempt's file may be left for it
        if i == killing.victim:
            left.extend(stale_attempts(killing.victim_path))

    with RayExecutor(max_retries=2) as ex:
        killing = Killing(ex, 2, tmp_path)
        run(source, dst, _opts(), executor=killing, progress=None, after_shard=check)
    attempts = [json.loads(line) for line in (tmp_path / "attempts.jsonl").read_text().splitlines()]
    assert len(attempts) == 2 and attempts[0]["pid"] != attempts[1]["pid"]  # a new worker ran the retry
    assert attempts[1]["stale_seen"] is True  # the killed attempt had left a half-written file ...
    assert not Path(attempts[0]["path"]).exists() and left == []  # ... which is gone
    assert tree_digest(dst) == local[1]


class Interrupt(KeyboardInterrupt):
    pass


def test_resume_after_interrupted_ray_run(source, local, tmp_path):
    dst = tmp_path / "out"

    def stop(i):
        if i == 3:
            raise Interrupt

    with pytest.raises(Interrupt), RayExecutor() as ex:
        run(source, dst, _opts(), executor=ex, progress=None, after_shard=stop)
    assert not dst.exists() and staging_dir(dst).exists()
    with RayExecutor() as ex:
        res = run(source, dst, _opts(), executor=ex, progress=None, resume=True)
    assert res.resumed_shards == 4
    assert tree_digest(dst) == local[1]


def test_dequant_on_ray(local, tmp_path):
    opts = Options(mode="dequant", dtype="bf16", shard_size=1_000_000)
    run(local[0], tmp_path / "here", opts, progress=None)
    with RayExecutor() as ex:
        run(local[0], tmp_path / "ray", opts, executor=ex, progress=None)
    assert tree_digest(tmp_path / "ray") == tree_digest(tmp_path / "here")


def _flaky(log_dir, path):
    """Raises OSError on its first run (a storage hiccup), then writes `path`."""
    marker = Path(log_dir) / "flaky"
    runs = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(runs))
    if runs == 1:
        raise OSError("stale file handle")
    path.write_bytes(b"ok")
    return {}, "digest"


def test_transient_errors_are_retried_data_errors_are_not(source, tmp_path):
    with RayExecutor() as ex:
        assert ex.submit(_flaky, str(tmp_path), tmp_path / "f.partial").result() == ({}, "digest")
    assert (tmp_path / "flaky").read_text() == "2" and (tmp_path / "f.partial").read_bytes() == b"ok"
    assert stale_attempts(tmp_path / "f.partial") == []

    bad = tiny_llama(np.random.default_rng(1), layers=1)
    bad["model.layers.0.mlp.down_proj.weight"][3, 5] = np.nan
    src = write_dense(tmp_path / "nan", bad)
    with RayExecutor() as ex, pytest.raises(NonFiniteError, match="--nonfinite") as e:
        run(src, tmp_path / "out", _opts(), executor=ex, progress=None)
    assert not isinstance(e.value, ray.exceptions.RayError)  # the error itself, not a remote wrapper
    assert not staging_dir(tmp_path / "out").exists()  # a data error leaves nothing to resume


def test_cli_starts_and_stops_its_own_cluster(source, local, tmp_path):
    dst = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "fp8port",
        "convert",
        str(source),
        str(dst),
        "--preset",
        "deepseek-v3.1",
        "--shard-size",
        "600000",
        "--ray",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^ray: local cluster, \d+ CPU\(s\) on 1 node\(s\)", proc.stderr, re.M), proc.stderr
    assert "wrote model-00001-of-" in proc.stderr
    assert tree_digest(dst) == local[1]


def _sleep_then_write(seconds, path):
    time.sleep(seconds)
    path.write_bytes(b"late")
    return {}, "late"


def test_shutdown_stops_tasks_nobody_will_collect(tmp_path):
    ex = RayExecutor()
    fut = ex.submit(_sleep_then_write, 30.0, tmp_path / "late.partial")
    time.sleep(1.0)  # let it start
    t = time.perf_counter()
    ex.shutdown()
    assert time.perf_counter() - t < 10
    with pytest.raises(ray.exceptions.TaskCancelledError):
        fut.result()
    assert not (tmp_path / "late.partial").exists()  # no writer is left behind
