"""write_file hashes a shard while writing it; staging's sha256_file trusts that digest only while the
file is the one written."""

import hashlib
import time

import numpy as np

from fp8port.checkpoint.safetensors_io import Entry, write_file, written_digest
from fp8port.checkpoint.staging import sha256_file


def test_digest_while_writing_equals_the_file(tmp_path):
    p = tmp_path / "a.safetensors"
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 255, n, dtype=np.uint8) for n in (3_000_001, 17, 1 << 20, 5)]
    entries = [Entry(f"t{i}", "U8", (a.size,), lambda a=a: a) for i, a in enumerate(arrays)]
    digest = write_file(p, entries, {"format": "pt"})
    assert digest == hashlib.sha256(p.read_bytes()).hexdigest()
    assert sha256_file(p) == digest == written_digest(p)
    data = bytearray(p.read_bytes())
    time.sleep(0.05)  # past the file system's timestamp tick
    data[-1] ^= 1  # changed behind our back: the remembered digest no longer applies
    p.write_bytes(bytes(data))
    assert written_digest(p) is None
    assert sha256_file(p) == hashlib.sha256(bytes(data)).hexdigest() != digest
