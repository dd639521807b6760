import json
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
BACKENDS = ("reference", "fast")


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
    from fp8port.quant import fast

    return BACKENDS if fast.unsupported_reason(scheme) is None else ("reference",)


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param
