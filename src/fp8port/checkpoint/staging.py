"""Where a conversion writes before it is complete: a hidden folder beside DST.

Nothing appears at DST until every file is written and checked: the staging folder is
renamed onto DST at the end (one rename). It holds a lock (one writer at a time) and a
journal of finished shards with their checksums, which `--resume` trusts only when the
source and options are unchanged (same fingerprint).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

from ..errors import ConversionError
from ..jsonsafe import json_safe
from .safetensors_io import written_digest

JOURNAL = "journal.json"
LOCK = "lock"


def staging_dir(dst: Path) -> Path:
    return dst.parent / f".{dst.name}.fp8port-partial"


def sha256_file(path: Path) -> str:
    """The file's SHA-256: remembered from writing it in this process (safetensors_io.write_file),
    else read back."""
    known = written_digest(path)
    if known is not None:
        return known
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def write_json_atomic(path: Path, obj) -> None:
    """`obj` as sorted, indented JSON; a str is written as it is (a layout that formats its own files)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        if isinstance(obj, str):
            f.write(obj)
        else:
            json.dump(json_safe(obj), f, indent=2, sort_keys=True, allow_nan=False)
            f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_destination(src: Path, dst: Path, overwrite: bool, single: bool = False) -> None:
    """DST outside SRC and free (or --overwrite): a folder, or with `single` one file."""
    s, d = src.resolve(), dst.resolve()
    if d == s or d.is_relative_to(s if s.is_dir() else s.parent):
        raise ConversionError(f"destination {dst} is inside the source {src}; choose a folder outside it")
    if s.is_relative_to(d):
        raise ConversionError(f"the source {src} is inside the destination {dst}")
    if single:
        if dst.is_dir() or (dst.exists() and not dst.is_file()):
            raise ConversionError(f"destination {dst} exists and is not a file")
        if dst.exists() and not overwrite:
            raise ConversionError(f"destination {dst} exists; pass --overwrite to replace it")
        return
    if dst.exists() and not dst.is_dir():
        raise ConversionError(f"destination {dst} exists and is not a folder")
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise ConversionError(f"destination {dst} is not empty; pass --overwrite to replace it")


class Staging:
    """The staging folder of one conversion, locked while this object is open."""

    def __init__(self, dst: Path, fingerprint: str, resume: bool):
        self.dst, self.dir, self.fingerprint = dst, staging_dir(dst), fingerprint
        existed = self.dir.exists()
        if existed and not resume:
            raise ConversionError(
                f"an interrupted conversion to {dst} left {self.dir}; continue it with "
                "--resume, or delete that folder to start over"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        journal = self.dir / JOURNAL
        self.done: dict[str, str] = {}
        if existed and journal.exists():
            j = json.loads(journal.read_text())
            if j.get("fingerprint") != fingerprint:
                self.release()
                raise ConversionError(
                    f"{self.dir} belongs to a conversion with another source or other options; "
                    "rerun with the same command, or delete that folder to start over"
                )
            # keep only shards still present and intact
            self.done = {
                n: h for n, h in j.get("done", {}).items() if (self.dir / n).exists() and sha256_file(self.dir / n) == h
            }
        self._save()

    def _lock(self):
        lock = self.dir / LOCK
        me = f"{os.getpid()} {socket.gethostname()}"
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                os.write(fd, me.encode())
                os.close(fd)
                return
            except FileExistsError:
                pid, _, host = lock.read_text().partition(" ")
                if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                    lock.unlink()  # left by a killed run on this machine
                    continue
                raise ConversionError(
                    f"another conversion (pid {pid} on {host}) is writing {self.dst}; "
                    f"wait for it, or remove {lock} if it is gone"
                ) from None
        raise ConversionError(f"could not lock {lock}")

    def _save(self):
        write_json_atomic(self.dir / JOURNAL, {"fingerprint": self.fingerprint, "done": self.done})

    def shard_path(self, name: str) -> Path:
        return self.dir / name

    def temp_path(self, name: str) -> Path:
        return self.dir / f"{name}.partial"

    def mark_done(self, name: str, digest: str) -> None:
        self.done[name] = digest
        self._save()

    def release(self):
        (self.dir / LOCK).unlink(missing_ok=True)

    def discard(self) -> None:
        """Remove the staging folder (a failure that a rerun would only repeat)."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def publish(self, overwrite: bool, file: str | None = None) -> None:
        """Make DST the finished output in one rename; the lock and journal do not travel. With
        `file`, DST is that one file of the staging folder, which is then removed."""
        if file is not None:
            if self.dst.exists() and not overwrite:
                raise ConversionError(f"destination {self.dst} appeared during the conversion")
            os.replace(self.dir / file, self.dst)
            shutil.rmtree(self.dir)
            return
        (self.dir / JOURNAL).unlink(missing_ok=True)
        for p in self.dir.glob("*.partial"):
            p.unlink()
        (self.dir / LOCK).unlink(missing_ok=True)
        if self.dst.exists():
            if any(self.dst.iterdir()) and not overwrite:
                raise ConversionError(f"destination {self.dst} became non-empty during the conversion")
            old = self.dst.parent / f".{self.dst.name}.fp8port-old"
            os.replace(self.dst, old)
            os.replace(self.dir, self.dst)
            shutil.rmtree(old)
        else:
            os.replace(self.dir, self.dst)
