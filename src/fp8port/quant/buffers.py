"""64-byte-aligned output arrays, recycled once the caller drops them.

A fresh 58 MB array costs 5-14 ms of page faults here (the kernel zeroes every page it hands
out), more than the kernel that fills it (about 4 ms), and glibc maps every block over 32 MB
anew. Quantizing or dequantizing same-shaped tensors one after another (a layer's weight on
every forward, a checkpoint's layers) therefore reuses the buffers of arrays that died, up to
`POOL_BYTES` in all. Arrays under `MIN_BYTES` come from NumPy directly.

Safety: a pooled array is `np.frombuffer` of a memoryview, so NumPy's base chain of every view
made from it (slices, dtype views, torch.from_numpy) ends at that array, not at the raw buffer;
the buffer goes back to the pool only when that array, hence every view, is gone.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

MIN_BYTES = 64 << 10
POOL_BYTES = 512 << 20

_lock = threading.Lock()
_free: dict[int, list[np.ndarray]] = {}
_held = 0


def _give_back(raw: np.ndarray) -> None:
    global _held
    with _lock:
        if _held + raw.nbytes <= POOL_BYTES:
            _free.setdefault(raw.nbytes, []).append(raw)
            _held += raw.nbytes


def _take(nbytes: int) -> np.ndarray:
    global _held
    with _lock:
        stack = _free.get(nbytes)
        if stack:
            _held -= nbytes
            return stack.pop()
    return np.empty(nbytes, np.uint8)


def empty(shape, dtype) -> np.ndarray:
    """Like np.empty, on a 64-byte boundary (NumPy's large arrays are only 16-byte aligned)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if n < MIN_BYTES:
        buf = np.empty(n + 64, np.uint8)
        off = -buf.ctypes.data % 64
        return buf[off : off + n].view(dtype).reshape(shape)
    raw = _take(n + 64)
    off = -raw.ctypes.data % 64
    arr = np.frombuffer(memoryview(raw)[off : off + n], np.uint8)
    fin = weakref.finalize(arr, _give_back, raw)
    fin.atexit = False
    return arr.view(dtype).reshape(shape)


def clear() -> None:
    """Drop every pooled buffer (their memory goes back to the system)."""
    global _held
    with _lock:
        _free.clear()
        _held = 0
