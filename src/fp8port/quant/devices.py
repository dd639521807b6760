"""Device backends (the Triton kernels on GPUs) register here; quant asks which one a tensor lives on.

quant never imports them (nothing below nn imports `kernels`): `fp8port.kernels` registers its
backend when it is imported, which `fp8port/__init__` does. A backend has `on_device(x)`,
`unsupported_reason(scheme)`, `quantize(x, scheme, role=, nonfinite=)`, `dequantize(q, dtype)`,
`gemm_unsupported_reason(a, b)` and `scaled_matmul(a, b, out_dtype=)`.
"""

from __future__ import annotations

_BACKENDS: list = []


def register(backend) -> None:
    """Add a device backend (once; later registrations of the same object are ignored)."""
    if backend not in _BACKENDS:
        _BACKENDS.append(backend)


def for_tensor(x):
    """The registered backend whose device holds `x`, or None (CPU arrays and tensors)."""
    for b in _BACKENDS:
        if b.on_device(x):
            return b
    return None
