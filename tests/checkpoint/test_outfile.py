"""outfile.SequentialFile: the bytes submitted, in order, at exactly the size given, whether written past the
page cache (O_DIRECT), through it (no O_DIRECT here), or switched over when O_DIRECT writes are refused."""

import errno
import os

import numpy as np
import pytest

from fp8port.checkpoint import outfile
from fp8port.checkpoint.outfile import ALIGN, CHUNK, SequentialFile

# piece sizes around the block and buffer edges: empty, one byte, a block less / more one, a buffer and a bit
EDGES = [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, CHUNK - 1, CHUNK, CHUNK + 3, 2 * CHUNK + ALIGN]


def _write(path, pieces):
    with SequentialFile(path, sum(len(p) for p in pieces)) as f:
        futures = [f.submit(p) for p in pieces]
        for fut in futures:
            fut.result()
        f.close()
    return f


@pytest.mark.parametrize("n", EDGES)
def test_one_piece_round_trips(tmp_path, n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    _write(tmp_path / "f", [data])
    assert (tmp_path / "f").read_bytes() == data


def test_many_pieces_keep_their_order(tmp_path):
    rng = np.random.default_rng(1)
    sizes = [*EDGES, *rng.integers(0, 3 * CHUNK, 12)]
    rng.shuffle(sizes)
    pieces = [rng.integers(0, 256, int(n), dtype=np.uint8) for n in sizes]
    _write(tmp_path / "f", pieces)
    assert (tmp_path / "f").read_bytes() == b"".join(p.tobytes() for p in pieces)


def test_without_o_direct(tmp_path, monkeypatch):
    monkeypatch.setattr(outfile, "_O_DIRECT", 0)  # another OS: the page cache, same bytes
    data = os.urandom(CHUNK + 12345)
    f = _write(tmp_path / "f", [data])
    assert not f.direct and (tmp_path / "f").read_bytes() == data


def test_refused_o_direct_writes_fall_back(tmp_path, monkeypatch):
    pwrite, calls = os.pwrite, []

    def refuse_direct(fd, data, off):  # a device that wants other alignment: EINVAL while O_DIRECT is set
        calls.append(off)
        if _has_direct(fd):
            raise OSError(errno.EINVAL, "Invalid argument")
        return pwrite(fd, data, off)

    monkeypatch.setattr(os, "pwrite", refuse_direct)
    data = os.urandom(2 * CHUNK + 999)
    f = _write(tmp_path / "f", [data])
    assert not f.direct and (tmp_path / "f").read_bytes() == data and calls


def _has_direct(fd):
    import fcntl

    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & outfile._O_DIRECT)


def test_other_write_errors_propagate(tmp_path, monkeypatch):
    def full(fd, data, off):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(OSError) as e, SequentialFile(tmp_path / "f", CHUNK + 1) as f:
        f.submit(os.urandom(CHUNK + 1)).result()
        f.close()
    assert e.value.errno == errno.ENOSPC


@pytest.mark.parametrize("extra", [-1, 1])
def test_size_must_match(tmp_path, extra):
    with pytest.raises(ValueError, match="submitted"), SequentialFile(tmp_path / "f", 100) as f:
        f.submit(b"x" * (100 + extra))
        f.close()


def test_leaving_early_closes_the_file(tmp_path):
    with pytest.raises(KeyError), SequentialFile(tmp_path / "f", 3 * CHUNK) as f:
        f.submit(os.urandom(CHUNK + 5))
        raise KeyError("the producer failed")
    assert f._closed  # the file closed and both threads done (not left writing); the caller removes the file
    assert f._copier._shutdown and f._io._shutdown
