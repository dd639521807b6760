"""GGUF files (llama.cpp's one-file container) as checkpoints, through the `gguf` package.

Reading: `GGUFReader` parses the header; a `GgufFile` lists every tensor under its GGUF name with its
NumPy-order element shape and its ggml type as dtype (F32 / F16 / BF16 are also safetensors names;
block types read as rows of raw blocks). llama.cpp's `llama` architecture stores the q / k projections
with the rows of each head reordered for its rotary embedding (`qk_order`); `read` undoes that, so
every value compares with the Hugging Face tensor it came from. Writing: `write_gguf` streams tensors
one at a time through `GGUFWriter` (tensor infos first, then the data in order).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from .folder import Checkpoint
from .safetensors_io import TensorInfo, read_tensor

GGUF_SUFFIX = ".gguf"
DENSE = {
    "F32": "F32",
    "F16": "F16",
    "BF16": "BF16",
    "F64": "F64",
    "I8": "I8",
    "I16": "I16",
    "I32": "I32",
    "I64": "I64",
}  # ggml type name -> safetensors dtype of the same bytes
# architectures whose q / k rows llama.cpp stores in its rotary order (convert_hf_to_gguf's LlamaModel)
PERMUTED_QK = ("llama",)
_QK = re.compile(r"blk\.\d+\.attn_(q|k)\.(weight|bias)$")


def row_order(arch: str, name: str, rows: int, heads: int, kv_heads: int) -> np.ndarray | None:
    """The source row of each row llama.cpp stores for tensor `name` (None: rows as in the source)."""
    m = _QK.match(name)
    if arch not in PERMUTED_QK or not m:
        return None
    return qk_order(rows, heads if m.group(1) == "q" else kv_heads)


def qk_order(rows: int, heads: int) -> np.ndarray:
    """The source row of every row llama.cpp stores for a q / k projection of `heads` heads: within a
    head, the two rotary halves [0, d/2) and [d/2, d) are interleaved (0, d/2, 1, d/2 + 1, ...)."""
    if heads <= 0 or rows % (2 * heads):
        raise CheckpointError(f"a q/k projection of {rows} rows does not split into {heads} heads of even size")
    half = rows // heads // 2
    return np.arange(rows).reshape(heads, 2, half).swapaxes(1, 2).reshape(-1)


def block_size(ggml_type: str) -> tuple[int, int]:
    """(elements, bytes) of one block of a ggml type (1 element for the dense types)."""
    import gguf

    return gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml_type]]


def raw_shape(ggml_type: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of a tensor's bytes: rows x bytes per row."""
    n, size = block_size(ggml_type)
    return tuple(shape[:-1]) + (shape[-1] // n * size,)


@dataclass
class GgufFile(Checkpoint):
    """One GGUF file: tensors under their GGUF names (dtype: the ggml type), the key-value metadata."""

    kv: dict = field(default_factory=dict)  # key -> value (arrays: lists; long arrays: their length)
    rows: dict[str, np.ndarray] = field(default_factory=dict)  # tensor -> the source row of each stored row

    @property
    def arch(self) -> str:
        return str(self.kv.get("general.architecture", ""))

    def read_raw(self, name: str) -> np.ndarray:
        """A tensor as stored: dense types as their NumPy dtype, block types as uint8 rows of blocks."""
        f, info = self.tensors[name]
        if info.dtype in DENSE:
            return read_tensor(f, info)
        return read_tensor(f, replace(info, dtype="U8", shape=raw_shape(info.dtype, info.shape)))

    def read(self, name: str) -> np.ndarray:
        a = self.read_raw(name)
        order = self.rows.get(name)
        if order is None:
            return a
        out = np.empty_like(a)
        out[order] = a  # stored row i holds source row order[i]
        return out

    def other_files(self) -> list[Path]:
        return []  # tokenizer and configuration live inside the file


_SCALAR = {
    0: "<u1",
    1: "<i1",
    2: "<u2",
    3: "<i2",
    4: "<u4",
    5: "<i4",
    6: "<f4",
    7: "<u1",
    10: "<u8",
    11: "<i8",
    12: "<f8",
}  # GGUF value type -> little-endian NumPy dtype (7: bool)
_STRING, _ARRAY, LONG = 8, 9, 256


class _Cursor:
    """Reads GGUF's little-endian header fields from a bytes buffer (IndexError / struct.error past its end)."""

    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0

    def take(self, dtype: str, n: int = 1) -> np.ndarray:
        dt = np.dtype(dtype)
        if n < 0 or n * dt.itemsize > len(self.buf) - self.pos:  # a count from the file: checked, never trusted
            raise ValueError(f"{n} values of {dt} run past the end of the header")
        a = np.frombuffer(self.buf, dt, n, self.pos)
        self.pos += dt.itemsize * n
        return a

    def int(self, dtype="<u8") -> int:
        return int(self.take(dtype)[0])

    def str(self) -> str:
        n = self.int()
        if n > len(self.buf) - self.pos:
            raise ValueError("string runs past the end")
        self.pos += n
        return self.buf[self.pos - n : self.pos].decode("utf-8", errors="replace")

    def value(self, vtype: int):
        if vtype == _STRING:
            return self.str()
        if vtype == _ARRAY:
            sub, n = self.int("<u4"), self.int()
            if sub == _STRING:
                items = [self.str() for _ in range(n)]
                return items if n <= LONG else n  # token lists: their length is what is described
            a = self.take(_SCALAR[sub], n)
            return a.tolist() if n <= LONG else n
        v = self.take(_SCALAR[vtype])[0].item()
        return bool(v) if vtype == 7 else v


def read_header(path: Path) -> tuple[dict, list[tuple[str, str, tuple[int, ...], int, int]]]:
    """(metadata, [(tensor, ggml type name, NumPy-order shape, first byte, end byte)]) of a GGUF file, from
    its header alone (the gguf package's GGUFReader parses every token string into arrays: seconds)."""
    import gguf

    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24 or head[:4] != b"GGUF":
            raise ValueError("no GGUF magic")
        n_tensors, n_kv = np.frombuffer(head, "<u8", 2, 8)
        size, chunk = path.stat().st_size, 1 << 20
        buf = head
        while True:  # the header is small but unbounded (vocabularies): read until it parses
            try:
                c = _Cursor(buf)
                c.pos = 24
                kv = {}
                for _ in range(int(n_kv)):
                    key = c.str()
                    kv[key] = c.value(c.int("<u4"))
                infos = []
                for _ in range(int(n_tensors)):
                    name = c.str()
                    dims = c.take("<u8", c.int("<u4")).tolist()
                    infos.append((name, gguf.GGMLQuantizationType(c.int("<u4")).name, tuple(reversed(dims)), c.int()))
                break
            except (IndexError, ValueError) as e:
                if len(buf) >= size:
                    raise ValueError(f"header ends early ({e})") from None
                buf += f.read(chunk)
                chunk *= 2
    align = kv.get("general.alignment", 32)
    if not isinstance(align, int) or isinstance(align, bool) or align <= 0:
        raise ValueError(f"general.alignment is {align!r}")
    start = -(-c.pos // align) * align
    out, seen = [], set()
    for name, tname, shape, offset in infos:
        n, nbytes = block_size(tname)
        if not shape or shape[-1] % n:
            raise ValueError(f"tensor {name!r} {list(shape)}: rows are not whole {tname} blocks of {n}")
        end = start + offset + math.prod(shape) // n * nbytes
        if end > size or name in seen:
            raise ValueError(f"tensor {name!r} ends past the end of the file" if end > size else f"{name!r} twice")
        seen.add(name)
        out.append((name, tname, shape, start + offset, end))
    return kv, out


def open_gguf(path: Path) -> GgufFile:
    """A GGUF file as a checkpoint (headers only; data is read per tensor)."""
    path = Path(path)
    try:
        kv, infos = read_header(path)
    except (OSError, ValueError, KeyError, TypeError) as e:  # KeyError: an unknown ggml type
        raise CheckpointError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
    tensors = {n: (path, TensorInfo(n, t, shape, b, e)) for n, t, shape, b, e in infos}
    ckpt = GgufFile(path.parent, tensors, {path: {}}, None, {}, kv=kv)
    heads = kv.get(f"{ckpt.arch}.attention.head_count")
    kv_heads = kv.get(f"{ckpt.arch}.attention.head_count_kv", heads)
    for n, (_, info) in tensors.items():
        if ckpt.arch in PERMUTED_QK and _QK.match(n) and not (isinstance(heads, int) and isinstance(kv_heads, int)):
            raise CheckpointError(
                f"{path}: {ckpt.arch}.attention.head_count(_kv) is missing or not one number; {n!r} cannot be read"
            )
        order = row_order(ckpt.arch, n, info.shape[0], heads, kv_heads)
        if order is not None:
            ckpt.rows[n] = order
    return ckpt


def write_gguf(path: Path, arch: str, kv: list[tuple[str, object, object]], infos, arrays) -> None:
    """Write one GGUF file.

    Args:
        kv: (key, value, GGUFValueType of the value or of a list's items; None: a string or strings).
        infos: (name, shape, ggml type name, bytes) per tensor: dense types with their element shape,
            block types with the shape of their raw bytes (rows x bytes per row).
        arrays: the tensors' arrays in the same order (an iterator: one in memory at a time).
    """
    import gguf

    w = gguf.GGUFWriter(path, arch)
    for key, value, vtype in kv:
        if vtype is None:
            (w.add_array if isinstance(value, list) else w.add_string)(key, value)
        elif isinstance(value, list):
            w.add_key_value(key, value, gguf.GGUFValueType.ARRAY, sub_type=vtype)
        else:
            w.add_key_value(key, value, vtype)
    sizes = {}
    for name, shape, tname, nbytes in infos:
        raw = np.dtype(np.float32 if tname in DENSE else np.uint8)  # uint8: `shape` counts bytes
        w.add_tensor_info(name, shape, raw, nbytes, raw_dtype=gguf.GGMLQuantizationType[tname])
        sizes[name] = nbytes
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for name, a in zip(sizes, arrays, strict=True):
            a = np.ascontiguousarray(a)
            if a.nbytes != sizes[name]:
                raise CheckpointError(f"{path}: tensor {name!r} has {a.nbytes} bytes, its header says {sizes[name]}")
            w.write_tensor_data(a.reshape(-1).view(np.uint8))
    finally:
        w.close()
