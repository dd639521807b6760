import json
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
BACKENDS = ("reference", "fast")


def _kernels():
    from fp8port import cpu

    return ("reference", "numba", *(t.value for t in cpu.tiers()))


KERNELS = _kernels()  # every implementation on this machine: reference, Numba, each ISA tier of the C kernels


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
    """reference; numba where the Numba kernels cover the scheme; each ISA tier of the C kernels where
    they cover it; "fast" where neither does but the fast path exists."""
    from fp8port.quant import fast, native

    out = ["reference"]
    if fast.numba_unsupported_reason(scheme) is None:
        out.append("numba")
    if native.unsupported_reason(scheme) is None:
        out += [k for k in KERNELS if k not in ("reference", "numba")]
    return tuple(out)


def quantize_on(x, scheme, be, **kw):
    """quantize(x, scheme) on backend `be`: reference, fast, numba (C kernels switched off) or an ISA
    tier of the C kernels (checked to have done the whole tensor: no silent fallback to Numba)."""
    from fp8port import cpu
    from fp8port.quant import native, quantize

    if be in BACKENDS:
        return quantize(x, scheme, backend=be, **kw)
    done = []
    kernel = native.quantize
    if be != "numba":
        native.quantize = lambda *a: done.append(kernel(*a)) or done[-1]
    try:
        with cpu.forced(be):
            q = quantize(x, scheme, backend="fast", **kw)
    finally:
        native.quantize = kernel
    if be != "numba" and (len(done) != 1 or done[0] is None):
        pytest.skip("a block the C kernel hands to the general one (non-finite)")
    return q
