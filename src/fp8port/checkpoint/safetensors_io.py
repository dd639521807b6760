"""safetensors files without a framework: validated headers, bounded reads, streamed writes.

The format: 8 bytes little-endian header length N, N bytes of JSON (name -> dtype, shape,
data_offsets; optional "__metadata__" of strings), then the data. Reads go through
`readinto` into a fresh array (not a memory map), so the resident memory of a conversion
is the tensors in flight, whatever the size of the files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from ..errors import CheckpointError
from .outfile import SequentialFile

MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit

# safetensors dtype -> (numpy dtype of one element, bits per element)
DTYPES: dict[str, tuple[np.dtype, int]] = {
    "BOOL": (np.dtype(np.bool_), 8),
    "U8": (np.dtype(np.uint8), 8),
    "I8": (np.dtype(np.int8), 8),
    "I16": (np.dtype(np.int16), 16),
    "U16": (np.dtype(np.uint16), 16),
    "I32": (np.dtype(np.int32), 32),
    "U32": (np.dtype(np.uint32), 32),
    "I64": (np.dtype(np.int64), 64),
    "U64": (np.dtype(np.uint64), 64),
    "F16": (np.dtype(np.float16), 16),
    "BF16": (np.dtype(ml_dtypes.bfloat16), 16),
    "F32": (np.dtype(np.float32), 32),
    "F64": (np.dtype(np.float64), 64),
    "F8_E4M3": (np.dtype(ml_dtypes.float8_e4m3fn), 8),
    "F8_E5M2": (np.dtype(ml_dtypes.float8_e5m2), 8),
    "F8_E4M3FNUZ": (np.dtype(ml_dtypes.float8_e4m3fnuz), 8),
    "F8_E5M2FNUZ": (np.dtype(ml_dtypes.float8_e5m2fnuz), 8),
    "F8_E8M0": (np.dtype(ml_dtypes.float8_e8m0fnu), 8),
    # Sub-byte types: stored packed, shape counts logical elements; read back as raw bytes.
    "F4": (np.dtype(np.uint8), 4),
    "F6_E2M3": (np.dtype(np.uint8), 6),
    "F6_E3M2": (np.dtype(np.uint8), 6),
}
DTYPE_OF_NUMPY = {v[0]: k for k, v in DTYPES.items() if v[1] >= 8 and k not in ("U8",)} | {np.dtype(np.uint8): "U8"}


def nbytes(dtype: str, shape) -> int:
    return math.ceil(math.prod(shape) * DTYPES[dtype][1] / 8)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute file offsets
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def _bad(path, msg):
    return CheckpointError(f"{path}: {msg}")


class _Duplicate(Exception):
    pass


def _no_duplicates(pairs):
    # json.loads would keep the last of two equal keys silently; a header must not be ambiguous
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _Duplicate(next(k for k in keys if keys.count(k) > 1))
    return dict(pairs)


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Tensor infos and metadata of one file, every field checked against the file size."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise _bad(path, f"not a safetensors file ({size} bytes, need at least 8)")
            n = int.from_bytes(head, "little")
            if n == 0 or n > min(MAX_HEADER, size - 8):
                raise _bad(path, f"header length {n} does not fit a file of {size} bytes")
            raw = f.read(n)
    except OSError as e:
        raise _bad(path, f"cannot read: {e.strerror or e}") from None
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _Duplicate as e:
        raise _bad(path, f"header names {e.args[0]!r} twice") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise _bad(path, f"header is not valid UTF-8 JSON ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise _bad(path, "header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise _bad(path, "__metadata__ must map strings to strings")
    data0, data_size = 8 + n, size - 8 - n
    infos, spans = {}, []
    for name, e in header.items():
        where = f"tensor {name!r}"
        if not isinstance(e, dict) or set(e) - {"dtype", "shape", "data_offsets"} or len(e) != 3:
            raise _bad(path, f"{where}: entry must have exactly dtype, shape, data_offsets")
        dtype, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise _bad(path, f"{where}: unknown dtype {dtype!r}")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise _bad(path, f"{where}: shape {shape!r} is not a list of non-negative integers")
        if not (isinstance(offs, list) and len(offs) == 2 and all(type(o) is int for o in offs)):
            raise _bad(path, f"{where}: data_offsets {offs!r} is not [begin, end]")
        b, end = offs
        if not 0 <= b <= end <= data_size:
            raise _bad(path, f"{where}: data_offsets {offs} outside the {data_size} data bytes")
        if end - b != nbytes(dtype, shape):
            raise _bad(path, f"{where}: {dtype} x {shape} needs {nbytes(dtype, shape)} bytes, offsets give {end - b}")
        infos[name] = TensorInfo(name, dtype, tuple(shape), data0 + b, data0 + end)
        spans.append((b, end, name))
    spans.sort()
    pos = 0
    for b, end, name in spans:
        if b != pos:
            what = "overlaps the previous tensor" if b < pos else f"leaves a gap at byte {pos}"
            raise _bad(path, f"tensor {name!r}: data {what}")
        pos = end
    if pos != data_size:
        raise _bad(path, f"{data_size - pos} trailing bytes after the last tensor")
    return infos, meta


def read_tensor(path: Path, info: TensorInfo) -> np.ndarray:
    """One tensor as a fresh array (uint8 bytes for the packed F4/F6 types). Large ones come from the
    pool of recycled buffers: a fresh one would be zeroed page by page by the kernel first."""
    from ..quant import buffers

    dt, bits = DTYPES[info.dtype]
    buf = buffers.empty(info.nbytes, np.uint8)
    try:
        with open(path, "rb") as f:
            f.seek(info.begin)
            if f.readinto(memoryview(buf)) != info.nbytes:
                raise _bad(path, f"tensor {info.name!r}: file ends early (changed since it was opened?)")
    except OSError as e:
        raise _bad(path, f"tensor {info.name!r}: cannot read: {e.strerror or e}") from None
    if bits < 8:
        return buf
    return buf.view(dt).reshape(info.shape)


@dataclass(frozen=True)
class Entry:
    """A tensor to write: its bytes are produced only when the writer reaches it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    produce: object  # () -> np.ndarray, or an iterable of arrays (pieces, in order): nbytes(dtype, shape) bytes

    @property
    def nbytes(self) -> int:
        return nbytes(self.dtype, self.shape)


# SHA-256 of the files this process wrote, hashed while writing: (inode, size, mtime_ns) -> digest
_WRITTEN: dict[str, tuple[tuple[int, int, int], str]] = {}


def _identity(path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def written_digest(path: Path) -> str | None:
    """The SHA-256 that write_file computed for `path`, if the file is still the one it wrote."""
    rec = _WRITTEN.get(str(path))
    try:
        return rec[1] if rec and rec[0] == _identity(path) else None
    except OSError:
        return None


# Bytes produced but not yet hashed and copied out that may wait while the next piece is produced
IN_FLIGHT = 32 << 20


def _pieces(made):
    """An Entry's produce() result as contiguous arrays: one array, or an iterable of pieces in order."""
    for a in [made] if isinstance(made, np.ndarray) else made:
        yield np.ascontiguousarray(a)


def _wait(item) -> int:
    """Wait until a queued piece is hashed and copied out; returns its size."""
    hashed, copied, data = item
    hashed.result()
    copied.result()
    return data.nbytes


def write_file(path: Path, entries: list[Entry], metadata: dict[str, str] | None = None) -> str:
    """Stream entries into `path` (the caller writes to a temporary name and renames); returns the
    file's SHA-256, computed on a second thread while the bytes are written (and the next tensor
    produced), so that nobody reads the file back to checksum it (see `written_digest`)."""
    header, pos = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for e in entries:
        header[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [pos, pos + e.nbytes]}
        pos += e.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned, as safetensors writes it
    head = len(raw).to_bytes(8, "little") + raw
    h = hashlib.sha256(head)
    # the bytes go to disk through outfile's buffers and threads (past the page cache), and are hashed on a
    # thread of their own (updates keep their order); both release the GIL, so they run beside the producing
    with SequentialFile(path, len(head) + pos) as out, ThreadPoolExecutor(1) as hasher:
        out.submit(head)
        # (hashed, copied out, the bytes): kept alive until both are done. Up to IN_FLIGHT bytes (at least one
        # piece) wait while the next is produced: a deeper queue of whole tensors kept more output buffers alive,
        # so the buffer pool missed and fresh pages were zeroed by the kernel (dequant: 0.3-0.4 CPU s more)
        pending, queued = [], 0
        for e in entries:
            made = 0
            for data in _pieces(e.produce()):
                view = memoryview(data.view(np.uint8).reshape(-1))
                pending.append((hasher.submit(h.update, view), out.submit(view), data))
                made += data.nbytes
                queued += data.nbytes
                while len(pending) > 1 and queued > IN_FLIGHT:
                    queued -= _wait(pending.pop(0))
            if made != e.nbytes:
                raise CheckpointError(f"{path}: tensor {e.name!r} produced {made} bytes, expected {e.nbytes}")
        for p in pending:
            _wait(p)
        out.close()  # the tail, then fsync
    digest = h.hexdigest()
    _WRITTEN[str(path)] = (_identity(path), digest)
    return digest
