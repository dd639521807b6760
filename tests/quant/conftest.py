import json
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
BACKENDS = ("reference", "fast")  # and "native" where backends_for says


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
    """reference; fast (whichever kernel runs by default); native (the AVX-512 kernel, checked to run)."""
    from fp8port.quant import fast, native

    if fast.unsupported_reason(scheme) is not None:
        return ("reference",)
    if native.level() and scheme.scale_rule.power_of_two and fast._e4m3_cap(scheme.element, scheme.rules) >= 0:
        return BACKENDS + ("native",)
    return BACKENDS


def quantize_on(x, scheme, be, **kw):
    """quantize(x) on backend `be`; 'native' also checks that the AVX-512 kernel did the whole
    tensor (no silent fallback to the Numba kernels)."""
    from fp8port.quant import native, quantize

    if be != "native":
        return quantize(x, scheme, backend=be, **kw)
    done = []
    kernel = native.quantize_pow2
    native.quantize_pow2 = lambda *a: done.append(kernel(*a)) or done[-1]
    try:
        q = quantize(x, scheme, backend="fast", **kw)
    finally:
        native.quantize_pow2 = kernel
    if done != [True]:
        pytest.skip("a block the native kernel hands to the general one (non-finite, E < -102, "
                    "or not whole blocks)")
    return q
