"""diskio: blocks reserved up front, writeback started early; neither changes the bytes. (A full disk:
test_hostile.py's test_disk_full_then_resume, on a 3 MiB tmpfs: ext4 keeps what a failed fallocate
allocated until the file is truncated, so a test must not fill a shared disk.)"""

import os

import pytest

from fp8port.checkpoint import diskio


@pytest.mark.skipif(diskio._fallocate is None, reason="this C library has no fallocate")
def test_reserve_allocates_the_blocks(tmp_path):
    p = tmp_path / "f"
    with open(p, "wb") as f:
        diskio.reserve(f.fileno(), 5_000_000, p)
        st = os.fstat(f.fileno())
    if st.st_size == 0:
        pytest.skip("this file system does not support fallocate")
    assert st.st_size == 5_000_000 and st.st_blocks * 512 >= 5_000_000


def test_start_writeback_keeps_the_bytes(tmp_path):
    p = tmp_path / "f"
    data = os.urandom(3 << 20)
    with open(p, "wb") as f:
        f.write(data)
        f.flush()
        diskio.start_writeback(f.fileno(), 0, len(data))
        os.fsync(f.fileno())
    assert p.read_bytes() == data
