"""NumPy <-> torch bridging shared by codec, quant, nn and kernels (a bottom layer: imports no package
of fp8port). torch is imported only when a torch tensor is actually handled.

Every view here is zero-copy: torch's bfloat16 / float8 tensors become NumPy arrays of the
ml_dtypes type with the same bytes, and back.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from .errors import UnsupportedInputError

# dequantize output dtypes, by canonical name, and the spellings users type for them
OUT_DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
_OUT_ALIASES = {
    "fp32": "float32",
    "f32": "float32",
    "float": "float32",
    "fp64": "float64",
    "double": "float64",
    "fp16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
}
# torch dtypes NumPy has no type for: (torch dtype name, raw integer view, ml_dtypes type)
_VIEWS = (
    ("bfloat16", "int16", ml_dtypes.bfloat16),
    ("float8_e8m0fnu", "uint8", ml_dtypes.float8_e8m0fnu),
    ("float8_e4m3fn", "uint8", ml_dtypes.float8_e4m3fn),
    ("float8_e5m2", "uint8", ml_dtypes.float8_e5m2),
)


def torch_module():
    import torch

    return torch


def is_torch(x) -> bool:
    """True for a torch tensor (checked without importing torch)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "dtype") and hasattr(x, "device")


def dtype_name(dtype) -> str:
    """Canonical output dtype name from a string, a NumPy / ml_dtypes dtype or a torch dtype.

    Raises UnsupportedInputError naming the valid ones."""
    if type(dtype).__module__.startswith("torch"):
        name = str(dtype).replace("torch.", "")
    elif isinstance(dtype, str):
        name = dtype.strip().lower()
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = str(dtype)
    name = _OUT_ALIASES.get(name, name)
    if name not in OUT_DTYPES:
        raise UnsupportedInputError(f"cannot dequantize to {dtype!r}; valid: {', '.join(OUT_DTYPES)}")
    return name


def to_torch(a: np.ndarray):
    """A CPU torch tensor sharing a NumPy array's memory (ml_dtypes types become torch's own)."""
    torch = torch_module()
    a = np.ascontiguousarray(a)
    for tname, raw, np_type in _VIEWS:
        if a.dtype == np.dtype(np_type):
            return torch.from_numpy(a.view(raw)).view(getattr(torch, tname))
    return torch.from_numpy(a)


def to_numpy(a) -> np.ndarray:
    """A NumPy view of a CPU torch tensor (or the array itself)."""
    if isinstance(a, np.ndarray):
        return a
    torch = torch_module()
    for tname, raw, np_type in _VIEWS:
        if a.dtype == getattr(torch, tname):
            return a.view(getattr(torch, raw)).numpy().view(np_type)
    return a.numpy()
