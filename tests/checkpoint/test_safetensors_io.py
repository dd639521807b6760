"""Our safetensors reader and writer agree with the safetensors library, and reject bad files."""

import json
import struct

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fp8port.checkpoint.safetensors_io import Entry, read_header, read_tensor, write_file
from fp8port.errors import CheckpointError


def test_library_reads_what_we_write(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {
        "a": rng.standard_normal((3, 5)).astype(ml_dtypes.bfloat16),
        "b": rng.integers(0, 256, (7,), dtype=np.uint8).view(ml_dtypes.float8_e4m3fn),
        "c": rng.standard_normal((2, 2)).astype(np.float32),
        "d": rng.integers(0, 255, (4,), dtype=np.uint8).view(ml_dtypes.float8_e8m0fnu),
    }
    dts = {"a": "BF16", "b": "F8_E4M3", "c": "F32", "d": "F8_E8M0"}
    write_file(
        tmp_path / "x.safetensors",
        [Entry(k, dts[k], v.shape, lambda v=v: v) for k, v in arrays.items()],
        {"format": "pt"},
    )
    with safe_open(tmp_path / "x.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        for k, v in arrays.items():
            t = f.get_tensor(k)
            assert tuple(t.shape) == v.shape
            assert t.contiguous().view(torch.uint8).numpy().tobytes() == v.view(np.uint8).tobytes()


def test_we_read_what_the_library_writes(tmp_path):
    t = {
        "w": torch.randn(4, 6).bfloat16(),
        "s": torch.rand(2, 3),
        "q": torch.randn(5, 5).to(torch.float8_e4m3fn),
        "e": torch.tensor([1.0, 2.0, 0.5]).to(torch.float8_e8m0fnu),
    }
    save_file(t, tmp_path / "y.safetensors", metadata={"format": "pt"})
    infos, meta = read_header(tmp_path / "y.safetensors")
    assert meta == {"format": "pt"} and set(infos) == set(t)
    for k, v in t.items():
        ours = read_tensor(tmp_path / "y.safetensors", infos[k])
        assert ours.shape == tuple(v.shape)
        assert ours.view(np.uint8).tobytes() == v.view(torch.uint8).numpy().tobytes()


def _file(tmp_path, header, data=b"", raw_len=None):
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    p = tmp_path / "bad.safetensors"
    p.write_bytes(struct.pack("<Q", len(raw) if raw_len is None else raw_len) + raw + data)
    return p


@pytest.mark.parametrize(
    "header,data,raw_len,match",
    [
        ({}, b"", 10**12, "header length"),
        (b"\xff\xfe not json", b"", None, "UTF-8 JSON"),
        ([1, 2], b"", None, "not a JSON object"),
        ({"t": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, None, "unknown dtype"),
        ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4, None, "needs 8 bytes"),
        ({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 4, None, "outside"),
        ({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, None, "non-negative"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
            },
            b"\0" * 8,
            None,
            "overlaps",
        ),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, None, "gap"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8, None, "trailing"),
        ({"__metadata__": {"k": 1}}, b"", None, "__metadata__"),
        ({"t": {"dtype": "F32", "shape": [1]}}, b"", None, "exactly dtype"),
    ],
)
def test_bad_headers_name_the_file_and_problem(tmp_path, header, data, raw_len, match):
    p = _file(tmp_path, header, data, raw_len)
    with pytest.raises(CheckpointError, match=match) as e:
        read_header(p)
    assert str(p) in str(e.value)


def test_truncated_file(tmp_path):
    p = tmp_path / "t.safetensors"
    p.write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_header(p)
