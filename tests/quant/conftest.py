import json
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
BACKENDS = ("reference", "fast")


def _kernels():
    from fp8port.quant import native

    return ("reference", "numba", "native") if native.level() else BACKENDS


KERNELS = _kernels()  # every implementation on this machine, for tests of native-covered schemes


def load_golden(name):
    return json.loads((GOLDEN / name).read_text())


def f32(hexes):
    return np.array([int(h, 16) for h in hexes], dtype=np.uint32).view(np.float32)


def bytes_of(a):
    """uint8 view of codes or a one-byte scale tensor (numpy or torch)."""
    if not isinstance(a, np.ndarray):
        import torch

        a = a.view(torch.uint8).numpy()
    return np.asarray(a).view(np.uint8)


def backends_for(scheme):
    """reference; then numba and native (the AVX-512 kernel, checked to run) where the native kernel
    covers the scheme on this machine, else fast (the Numba kernels) where they cover it."""
    from fp8port.quant import fast, native

    if fast.unsupported_reason(scheme) is not None:
        return ("reference",)
    if native.level() and scheme.scale_rule.power_of_two and fast._e4m3_cap(scheme.element, scheme.rules) >= 0:
        return ("reference", "numba", "native")
    return BACKENDS


def quantize_on(x, scheme, be, **kw):
    """quantize(x, scheme) on backend `be`: reference, fast, numba (native kernels switched off) or
    native (checked to have done the whole tensor: no silent fallback to Numba)."""
    from fp8port.quant import native, quantize

    if be in BACKENDS:
        return quantize(x, scheme, backend=be, **kw)
    done = []
    level, kernel = native.level, native.quantize_pow2
    if be == "numba":
        native.level = lambda: 0
    else:
        native.quantize_pow2 = lambda *a: done.append(kernel(*a)) or done[-1]
    try:
        q = quantize(x, scheme, backend="fast", **kw)
    finally:
        native.level, native.quantize_pow2 = level, kernel
    if be == "native" and done != [True]:
        pytest.skip("a block the native kernel hands to the general one (non-finite, E < -102, "
                    "or not whole blocks)")
    return q
