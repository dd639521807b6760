"""Dequantizing in row pieces (produce.dequantized_pieces, what dequant writes) gives the whole tensor's
bytes on every ISA tier, and write_file writes pieces exactly as it writes one array."""

import ml_dtypes
import numpy as np
import pytest

from fp8port import cpu, dequantize, quantize
from fp8port.checkpoint.produce import dequantized_pieces
from fp8port.checkpoint.safetensors_io import Entry, write_file
from fp8port.errors import CheckpointError

TIERS = [None, *(t.value for t in cpu.tiers())]  # None: whatever runs by default (Numba without the library)
CASES = [  # (preset, role, shape): ragged rows, so the last piece is a partial block
    ("deepseek-v3.1", "weight", (300, 256)),  # 128x128 tiles: pieces of whole 128-row blocks
    ("deepseek-v3.1", "activation", (37, 384)),  # 1x128: any row
    ("mxfp8", "weight", (129, 64)),
    ("mxfp4", "weight", (65, 96)),
    ("nvfp4", "weight", (50, 48)),  # a per-tensor scale folded into every block's
    ("deepseek-v3.1", "weight", (3, 130, 256)),  # experts: pieces along the expert axis
]


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("preset,role,shape", CASES)
@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16, np.float32])
def test_pieces_equal_the_whole(tier, preset, role, shape, dtype):
    rng = np.random.default_rng(len(shape) * 1000 + shape[-1])
    x = rng.standard_normal(shape, dtype=np.float32) * np.exp(rng.standard_normal((*shape[:-1], 1)) * 3)
    q = quantize(x.astype(np.float32), preset, role=role)
    dt = np.dtype(dtype)
    row = dt.itemsize * int(np.prod(shape[1:]))
    with cpu.forced(tier):
        whole = np.asarray(dequantize(q, dt.name))
        for piece_bytes in (1, 3 * row, 10**9):  # smallest pieces (one block of rows), a few, one
            pieces = list(dequantized_pieces(q, dt, piece_bytes))
            got = np.concatenate(pieces)
            assert got.dtype == whole.dtype and got.tobytes() == whole.tobytes()
            bh = q.scheme.block.extents(q.shape)[0]
            assert all(p.shape[0] % bh == 0 for p in pieces[:-1])


def test_write_file_takes_pieces(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (1000, 777), dtype=np.uint8)
    whole = write_file(tmp_path / "a", [Entry("t", "U8", a.shape, lambda: a)])
    split = write_file(tmp_path / "b", [Entry("t", "U8", a.shape, lambda: (a[i : i + 33] for i in range(0, 1000, 33)))])
    assert whole == split and (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_pieces_of_the_wrong_size_are_refused(tmp_path):
    a = np.zeros((10, 10), np.uint8)
    with pytest.raises(CheckpointError, match="produced 90 bytes"):
        write_file(tmp_path / "a", [Entry("t", "U8", a.shape, lambda: iter([a[:4], a[4:9]]))])
