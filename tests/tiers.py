"""Every kernel family this machine can run, for tests that compare fast paths with the references:
the Numba kernels, and each ISA tier of the C kernels (fp8port.cpu) the CPU has."""

from __future__ import annotations

import pytest

from fp8port import cpu

TIERS = tuple(t.value for t in cpu.tiers())
KERNELS = ("numba", *TIERS)


def use(kernel: str, monkeypatch) -> None:
    """Route backend='fast' to `kernel` for the rest of the test."""
    if kernel == "numba":
        monkeypatch.setattr(cpu, "tier", lambda: None)
    else:
        monkeypatch.setenv("FP8PORT_ISA", kernel)


@pytest.fixture(params=KERNELS)
def kernel(request, monkeypatch):
    use(request.param, monkeypatch)
    return request.param
