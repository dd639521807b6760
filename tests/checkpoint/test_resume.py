"""Interrupted conversions continue with --resume and end byte-identical; SRC never changes."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fp8port.checkpoint import Options, run
from fp8port.checkpoint.staging import LOCK, staging_dir
from fp8port.errors import ConversionError

from .conftest import tiny_llama, tiny_moe, tree_digest, write_dense


class Interrupt(KeyboardInterrupt):
    pass


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    rng = np.random.default_rng(5)
    src = write_dense(tmp_path_factory.mktemp("resume") / "src", tiny_llama(rng, layers=6), shards=3)
    return src


def _opts(**kw):
    return Options(**{"mode": "convert", "preset": "deepseek-v3.1", "shard_size": 600_000, **kw})


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    dst = tmp_path_factory.mktemp("ref") / "out"
    res = run(source, dst, _opts(), progress=None)
    assert len(res.plan.shards) >= 8
    return tree_digest(dst)


@pytest.mark.parametrize("stop_after", [0, 3, 7])
def test_interrupt_then_resume_is_byte_identical(source, reference, tmp_path, stop_after):
    before = tree_digest(source)
    dst = tmp_path / "out"

    def stop(i):
        if i == stop_after:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(source, dst, _opts(), progress=None, after_shard=stop)
    assert not dst.exists() and staging_dir(dst).exists()  # nothing visible; the work is kept
    with pytest.raises(ConversionError, match="--resume"):
        run(source, dst, _opts(), progress=None)
    with pytest.raises(ConversionError, match="other options"):
        run(source, dst, _opts(dtype="fp16", shard_size=500_000), progress=None, resume=True)
    res = run(source, dst, _opts(), progress=None, resume=True)
    assert res.resumed_shards == stop_after + 1
    assert tree_digest(dst) == reference
    assert tree_digest(source) == before
    assert not staging_dir(dst).exists()


def test_a_corrupted_finished_shard_is_redone(source, reference, tmp_path):
    dst = tmp_path / "out"

    def stop(i):
        if i == 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(source, dst, _opts(), progress=None, after_shard=stop)
    shard = sorted(p for p in staging_dir(dst).glob("model-*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:-7] + b"garbage")  # same size, wrong bytes
    res = run(source, dst, _opts(), progress=None, resume=True)
    assert res.resumed_shards == 4
    assert tree_digest(dst) == reference


def test_second_writer_is_refused(source, tmp_path):
    dst = tmp_path / "out"
    stage = staging_dir(dst)
    stage.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        import socket

        (stage / LOCK).write_text(f"{holder.pid} {socket.gethostname()}")
        with pytest.raises(ConversionError, match=f"another conversion \\(pid {holder.pid}"):
            run(source, dst, _opts(), progress=None, resume=True)
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its stale lock is taken over
    run(source, dst, _opts(), progress=None, resume=True)
    assert (dst / "model.safetensors.index.json").exists()


def _done_shards(dst) -> int:
    try:
        return len(json.loads((staging_dir(dst) / "journal.json").read_text())["done"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_minus_nine_at_random_points(source, reference, tmp_path, seed):
    """A real process, killed with SIGKILL once a random number of shards is done (so the
    kill lands while the next one is being written), then resumed from the shell."""
    kill_after = int(np.random.default_rng(seed).integers(1, 8))
    dst = tmp_path / "out"
    before = tree_digest(source)
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
        "-q",
    ]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while p.poll() is None and _done_shards(dst) < kill_after and time.monotonic() < deadline:
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    p.wait()
    if not dst.exists():  # killed mid-way (the usual case)
        assert staging_dir(dst).exists()
        done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert tree_digest(dst) == reference
    assert tree_digest(source) == before


def test_worker_processes_give_the_same_bytes(source, reference, tmp_path):
    dst = tmp_path / "out"
    run(source, dst, _opts(), progress=None, workers=2)
    assert tree_digest(dst) == reference


@pytest.mark.parametrize("kw", [{"preset": "deepseek-v4"}, {"preset": "mxfp4", "layout": "gpt-oss"}])
def test_moe_layouts_resume_byte_identical(tmp_path, kw):
    """DeepSeek-V4 (FP4 experts, I8 + E8M0) and gpt-oss (blocks / scales) resume like every layout."""
    src = write_dense(tmp_path / "src", tiny_moe(np.random.default_rng(6)), shards=2)
    opts = Options(mode="convert", shard_size=40_000, **kw)
    run(src, tmp_path / "ref", opts, progress=None)

    def stop(i):
        if i == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(src, tmp_path / "out", opts, progress=None, after_shard=stop)
    res = run(src, tmp_path / "out", opts, progress=None, resume=True)
    assert res.resumed_shards == 2 and len(res.plan.shards) > 2
    assert tree_digest(tmp_path / "out") == tree_digest(tmp_path / "ref")
