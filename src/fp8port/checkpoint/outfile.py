"""An output file written front to back past the page cache (Linux O_DIRECT), through a few recycled buffers.

Why: a buffered write() copies every byte into page-cache pages the kernel must first find (on a VM whose
free memory goes back to the host, each fresh page costs a host fault too), then writes back and later
evicts. On the SPR-class 2-vCPU VM of docs/conversion-io.md that copy was 30-33 % of convert's and
dequant's CPU samples; writing 1.2 GB took 0.36-2.9 CPU s buffered (1 MB calls) and 0.05 CPU s through
O_DIRECT, in less wall time. The bytes go through three 8 MB page-aligned buffers: a copying thread fills
one while an I/O thread writes another, so the disk stays busy while the caller produces the next tensor.

Where O_DIRECT is missing or refused (another OS, tmpfs on an old kernel, a device that wants larger
blocks), or FP8PORT_DIRECT_IO=0, the same buffers are written through the page cache, with writeback started
per buffer.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from . import diskio

ALIGN = 4096  # O_DIRECT offsets, lengths and addresses: a multiple of every common logical block size
CHUNK = 8 << 20  # bytes per write (the device splits requests at 4 MB here; 1-8 MB cost the same)
BUFFERS = 3

# FP8PORT_DIRECT_IO=0 keeps the page cache: for a file system where O_DIRECT is slow rather than refused (a
# network one that then writes each buffer synchronously)
_O_DIRECT = getattr(os, "O_DIRECT", 0) if os.environ.get("FP8PORT_DIRECT_IO", "1") != "0" else 0
_lock = threading.Lock()
_rings: list[list[np.ndarray]] = []  # buffer sets of finished files, kept: fresh pages cost a fault each


def _take_ring() -> list[np.ndarray]:
    with _lock:
        if _rings:
            return _rings.pop()
    return [np.frombuffer(mmap.mmap(-1, CHUNK), np.uint8) for _ in range(BUFFERS)]  # page-aligned


def _give_ring(ring: list[np.ndarray]) -> None:
    with _lock:
        if len(_rings) < 2:  # more only while files are written at once; the rest are freed
            _rings.append(ring)


class SequentialFile:
    """A new file of a known size, written in order: `submit` each piece, then `close` (tail, fsync).

    Use as a context manager: leaving it on an exception waits for the writes in flight and closes the
    file (the caller removes it); `close` must be called for the file to be complete and durable.
    """

    def __init__(self, path, size: int):
        """Args: path: the file (created or truncated); size: its final size, reserved up front."""
        self.path, self.size = path, size
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        self.direct = bool(_O_DIRECT)
        try:
            self.fd = os.open(path, flags | _O_DIRECT, 0o644)
        except OSError as e:
            if not self.direct or e.errno != errno.EINVAL:
                raise
            self.direct, self.fd = False, os.open(path, flags, 0o644)
        try:
            diskio.reserve(self.fd, size, path)
        except BaseException:
            os.close(self.fd)
            raise
        self._ring = _take_ring()
        self._writes: list[Future | None] = [None] * BUFFERS  # the last write of each buffer
        self._cur = self._fill = self._off = self._written = 0
        self._copier, self._io = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
        self._closed = False

    def submit(self, data) -> Future:
        """Queue bytes after those already submitted (the copy runs on a thread of its own).

        Args: data: a contiguous buffer, kept alive and unchanged until the future is done.
        Returns: a future done once the bytes are copied out of `data` (its result raises a write error).
        """
        return self._copier.submit(self._put, np.frombuffer(data, np.uint8))

    def close(self) -> None:
        """Write the tail, cut the file to its size, fsync it and close it. Raises if fewer or more
        bytes than `size` were submitted, or any write failed."""
        try:
            self._copier.submit(self._finish).result()
        finally:
            self._shutdown()

    def _put(self, src: np.ndarray) -> None:
        pos = 0
        while pos < len(src):
            n = min(CHUNK - self._fill, len(src) - pos)
            self._ring[self._cur][self._fill : self._fill + n] = src[pos : pos + n]  # numpy drops the GIL
            self._fill += n
            pos += n
            if self._fill == CHUNK:
                self._send(CHUNK)

    def _send(self, nbytes: int) -> None:
        """Hand the current buffer's first `nbytes` to the I/O thread; wait until the next buffer is free."""
        i = self._cur
        self._writes[i] = self._io.submit(self._pwrite, i, nbytes, self._off)
        self._off += nbytes
        self._written += self._fill
        self._cur, self._fill = (i + 1) % BUFFERS, 0
        if (w := self._writes[self._cur]) is not None:
            w.result()

    def _pwrite(self, i: int, nbytes: int, off: int) -> None:
        view, done = memoryview(self._ring[i][:nbytes]), 0
        try:
            while done < nbytes:
                try:
                    done += os.pwrite(self.fd, view[done:], off + done)
                except OSError as e:
                    if not self.direct or e.errno != errno.EINVAL:
                        raise
                    # the file system or device refuses these O_DIRECT writes: go on through the page cache
                    import fcntl  # here: O_DIRECT implies a Unix, where the module exists

                    fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~_O_DIRECT)
                    self.direct = False
        finally:
            view.release()
        if not self.direct:
            diskio.start_writeback(self.fd, off, nbytes)

    def _finish(self) -> None:
        tail = self._fill
        if tail:  # O_DIRECT writes whole blocks: pad with zeros, then cut the file back
            padded = -(-tail // ALIGN) * ALIGN
            self._ring[self._cur][tail:padded] = 0
            self._send(padded)
        for w in self._writes:
            if w is not None:
                w.result()
        if self._written != self.size:
            raise ValueError(f"{self.path}: {self._written} bytes submitted, {self.size} expected")
        if self._off != self.size:
            os.ftruncate(self.fd, self.size)
        os.fsync(self.fd)

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._copier.shutdown(wait=True, cancel_futures=True)
        self._io.shutdown(wait=True)  # no write may still use the buffers when they are recycled
        os.close(self.fd)
        _give_ring(self._ring)

    def __enter__(self) -> SequentialFile:
        return self

    def __exit__(self, *exc) -> None:
        self._shutdown()
