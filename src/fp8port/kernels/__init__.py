"""Triton kernels: block-scaled quantize / dequantize and the block-scaled FP8 GEMM.

Triton is optional. Importing this package never imports it; `dispatch` (what the API calls
for tensors on a CUDA device) and `load()` import the kernel modules on first use and raise
TritonUnavailableError, naming the pip command, when Triton is missing.

Set TRITON_INTERPRET=1 before the first `import triton` to run the kernels on CPU tensors
(the tests do); the kernels avoid the interpreter's wrong fp32 -> fp8 cast by encoding and
decoding E4M3 with integer operations (see triton_quant.py).
"""

from __future__ import annotations

import importlib
import os

from ..errors import Fp8portError

TRITON_PIN = "triton==3.9.0"


class TritonUnavailableError(Fp8portError, ImportError):
    """Triton (or a device it can run on) is missing."""


def interpreting() -> bool:
    """True when Triton runs kernels on CPU tensors (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def available() -> bool:
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


def load(name: str):
    """The kernel module `name` ('triton_quant' or 'triton_gemm'), importing Triton on demand."""
    if name not in ("triton_quant", "triton_gemm"):
        raise ValueError(f"unknown kernel module {name!r}")
    try:
        importlib.import_module("triton")
    except ImportError as exc:
        raise TritonUnavailableError(
            f"the Triton kernels need Triton: pip install {TRITON_PIN} (or pip install 'fp8port[triton]')"
        ) from exc
    return importlib.import_module(f"{__name__}.{name}")


class _TritonBackend:
    """The Triton kernels as a device backend of quant (quant/devices.py); dispatch loads on first use."""

    def on_device(self, x) -> bool:
        return type(x).__module__.startswith("torch") and getattr(getattr(x, "device", None), "type", "") == "cuda"

    def __getattr__(self, name):
        from . import dispatch

        return getattr(dispatch, name)


def _register() -> None:
    from ..quant import devices

    devices.register(_TritonBackend())


_register()

__all__ = ["TRITON_PIN", "TritonUnavailableError", "available", "interpreting", "load"]
