"""fp8port.kernels without Triton: importing works, using a kernel names the pip command; and the
GPU benchmark stops at once, with a reason, where there is no CUDA device."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "bench_triton.py"

NO_TRITON = """
import sys
sys.modules["triton"] = None  # makes `import triton` raise ImportError
import torch
import fp8port.kernels as k
from fp8port.kernels import dispatch
from fp8port.errors import Fp8portError
assert not k.available()
assert dispatch.unsupported_reason(__import__("fp8port").quant.presets.get_preset("mxfp8").weight) is None
try:
    k.load("triton_quant")
except Fp8portError as e:
    print("LOAD", e)
try:
    dispatch.quantize(torch.zeros(2, 128), "deepseek-v3.1", role="activation")
except Fp8portError as e:
    print("QUANT", type(e).__name__, e)
"""


def test_kernels_import_without_triton():
    proc = subprocess.run(
        [sys.executable, "-c", NO_TRITON],
        capture_output=True,
        text=True,
        timeout=120,
        env={"TRITON_INTERPRET": "1", "PATH": ""},
    )
    assert proc.returncode == 0, proc.stderr
    assert "LOAD the Triton kernels need Triton: pip install triton==3.9.0" in proc.stdout
    assert "QUANT TritonUnavailableError" in proc.stdout and "pip install triton" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
def test_gpu_benchmark_fails_fast_without_cuda():
    env = {"PATH": "", "TRITON_INTERPRET": "0"}
    proc = subprocess.run([sys.executable, str(BENCH), "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    assert "no CUDA device visible" in proc.stderr and proc.stdout == ""
