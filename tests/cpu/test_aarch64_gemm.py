"""The fused linear kernels (cpu/gemm.c) on aarch64 (NEON) under qemu-user, through the same driver as
test_aarch64.py: decode_rows gives the reference dequantize's bytes, the GEMV stays within the float32
reassociation bound of tests/nn/test_fused.py (its sums are grouped per NEON vector, so its bytes
differ from x86-64's), for every decoder (arithmetic FP8 / FP6 / INT8, 4-bit table, 256-entry gather)."""

from __future__ import annotations

import struct
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

from fp8port.cpu import gemm
from fp8port.nn import FP8Linear
from tests.cpu.test_aarch64 import driver  # noqa: F401 (the cross-compiled driver, a fixture)
from tests.nn.test_fused import _check

PRESETS = ("deepseek-v3.1", "deepseek-v3", "mxfp4", "nvfp4", "mxfp6_e3m2", "mxint8", "hif8")


def test_aarch64_fused_kernels(driver):  # noqa: F811
    if not gemm.available():
        pytest.skip("the C kernels are not built here")
    torch.manual_seed(3)
    calls, checks = [], []  # checks: (output size, what to do with its bytes)
    for preset in PRESETS:
        lin = nn.Linear(200, 37)
        fl = FP8Linear.from_linear(lin, preset)
        fw = fl.fused_weight()
        g = fw.g
        w = fl.dequantized_weight()
        weight = [fw.codes.numpy().tobytes(), fw.scale.numpy().tobytes(), fw.lut.astype(np.float32).tobytes()]
        for b16 in (False, True):
            if b16 and not fw.bf16_exact:
                continue
            calls.append(b"".join([struct.pack("<I", 5), bytes(g), *weight, struct.pack("<I", b16)]))
            want = fl.dequantized_weight(torch.bfloat16 if b16 else torch.float32)
            checks.append((want.numel() * want.element_size(), want, preset))
        bias = lin.bias.detach().float()
        for m, dt in ((1, torch.float32), (3, torch.bfloat16), (8, torch.float32), (8, torch.bfloat16)):
            x = torch.randn(m, 200).to(dt)
            g.M, g.x_bf16 = m, int(dt == torch.bfloat16)
            g.y_bf16 = g.x_bf16
            calls.append(
                b"".join(
                    [
                        struct.pack("<I", 4),
                        bytes(g),
                        *weight,
                        struct.pack("<I", 1),
                        bias.numpy().tobytes(),
                        x.view(torch.int16 if g.x_bf16 else torch.int32).numpy().tobytes(),
                    ]
                )
            )
            checks.append((m * 37 * x.element_size(), (x, w, bias), f"{preset} M={m} {dt}"))
    run = subprocess.run(["qemu-aarch64", str(driver)], input=b"".join(calls), capture_output=True, timeout=600)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    out, pos = run.stdout, 0
    for size, want, what in checks:
        got = out[pos : pos + size]
        pos += size
        if isinstance(want, torch.Tensor):
            assert got == want.view(torch.int16 if want.dtype == torch.bfloat16 else torch.int32).numpy().tobytes(), (
                what
            )
        else:
            x, w, bias = want
            y = torch.frombuffer(bytearray(got), dtype=x.dtype).reshape(x.shape[0], 37)
            _check(y, x.float(), w, bias, f"aarch64 {what}")
    assert pos == len(out)
