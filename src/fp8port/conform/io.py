"""Array bundles on disk: deterministic .npz/.safetensors writing, and reading another
implementation's outputs (.npz, .safetensors, .npy trees) into plain NumPy arrays.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from ..errors import Fp8portError, UnsupportedInputError

# A fixed timestamp: np.savez stamps the current time, so its bytes change on every run.
_EPOCH = (1980, 1, 1, 0, 0, 0)
SUFFIXES = (".npz", ".safetensors", ".npy")


class OutputsNotFoundError(Fp8portError, FileNotFoundError):
    """An outputs path that does not exist or holds no readable arrays."""


class DisagreeingOutputsError(Fp8portError, ValueError):
    """Two files of one outputs folder hold the same case with different values."""


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, buf.getvalue())


def write_safetensors(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(arrays[k]) for k in sorted(arrays)}, str(path))


def _torch_to_numpy(t) -> np.ndarray:
    import torch

    if t.dtype.itemsize == 1 and t.dtype != torch.bool:
        return t.contiguous().view(torch.uint8).numpy()  # codes and E8M0/E4M3 scale bytes
    if t.dtype in (torch.bfloat16, torch.float16, torch.float64):
        return t.float().numpy()
    return t.numpy()


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: _torch_to_numpy(f.get_tensor(k)) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise UnsupportedInputError(f"{path}: not a readable safetensors file ({exc})") from None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: _plain(z[k]) for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UnsupportedInputError(f"{path}: not a readable .npz file ({exc})") from None


def _read_npy(path: Path) -> np.ndarray:
    try:
        return _plain(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise UnsupportedInputError(f"{path}: not a readable .npy file ({exc})") from None


def _plain(a: np.ndarray) -> np.ndarray:
    """ml_dtypes arrays (float8 codes, bfloat16 scales) as uint8 / float32."""
    if a.dtype.itemsize == 1 and a.dtype.kind not in "b":
        return a.view(np.uint8)
    if a.dtype.kind == "V" or a.dtype.name in ("bfloat16", "float16", "float64"):
        return a.astype(np.float32)
    return a


def read_bundle(path) -> dict[str, np.ndarray]:
    """All arrays under `path`, keyed like the exported expected files ('<case>/codes').

    `path` is an .npz or .safetensors file, one .npy file, or a directory of such files; in a
    directory, `<case>/codes.npy` is keyed by its path relative to the directory.
    """
    path = Path(path)
    if not path.exists():
        raise OutputsNotFoundError(f"outputs not found: {path}")
    if path.is_file():
        return _read_file(path, path.parent)
    out: dict[str, np.ndarray] = {}
    origin: dict[str, Path] = {}
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES):
        for key, a in _read_file(f, path).items():
            if key in out and not _same(out[key], a):
                raise DisagreeingOutputsError(
                    f"{origin[key]} and {f} both hold {key!r} with different values; a folder must hold one "
                    "implementation's outputs (check one file, or a folder per implementation)"
                )
            out[key], origin[key] = a, f
    if not out:
        raise OutputsNotFoundError(f"no .npz, .safetensors or .npy files under {path}")
    return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f" and b.dtype.kind == "f")


def _read_file(f: Path, root: Path) -> dict[str, np.ndarray]:
    if f.suffix == ".npz":
        return _read_npz(f)
    if f.suffix == ".safetensors":
        return _read_safetensors(f)
    if f.suffix == ".npy":
        return {f.relative_to(root).with_suffix("").as_posix(): _read_npy(f)}
    raise UnsupportedInputError(f"{f}: outputs must be .npz, .safetensors or .npy (or a directory of them)")
