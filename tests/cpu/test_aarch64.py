"""The C kernels on aarch64 (NEON), under qemu-user: the same calls as on this machine, replayed by a
cross-compiled driver (src/fp8port/cpu/driver.c), give the same bytes. The calls are recorded while
fp8port runs its x86-64 kernels here, whose bytes the rest of the suite checks against the NumPy
references; a call is a kernel's parameter struct (ctypes bytes: both are LP64) and its inputs.
Needs gcc-aarch64-linux-gnu and qemu-user (`make qemu`); skips with the reason where they are missing.
"""

from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import fp8port
from fp8port import cpu
from fp8port.codec.profiles import PROFILES
from fp8port.formats import FORMATS
from fp8port.quant import Scheme, get_preset

DRIVER = Path(__file__).resolve().parents[2] / "src" / "fp8port" / "cpu" / "driver.c"
CC, QEMU = "aarch64-linux-gnu-gcc", "qemu-aarch64"
STEPS = 1793


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    missing = [t for t in (CC, QEMU) if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (make qemu installs them as root with apt)")
    if not cpu.tiers():
        pytest.skip("the C kernels are not built here (the calls to replay come from them)")
    exe = tmp_path_factory.mktemp("aarch64") / "driver"
    subprocess.run(
        [CC, "-O3", "-std=gnu11", "-ffp-contract=off", "-static", str(DRIVER), "-o", str(exe)],
        check=True,
        capture_output=True,
        text=True,
    )
    return exe


class Recorder:
    """Wraps cpu.encode / quantize / dequantize: each call is serialized for the driver and its x86-64
    outputs kept to compare."""

    def __init__(self, monkeypatch):
        self.stdin, self.expect = [], []  # expect: (size of each output, their bytes)
        for name in ("encode", "quantize", "dequantize"):
            monkeypatch.setattr(cpu, name, getattr(self, name).__get__(self))

    def encode(self, bits, enc, lut, out, _real=cpu.encode):
        _real(bits, enc, lut, out)
        rec = [
            struct.pack("<IIQ", 1, int(bits.dtype == np.uint16), bits.size),
            bytes(enc or cpu.Enc()),
            struct.pack("<I", lut is not None),
            b"" if lut is None else lut.tobytes(),
            bits.tobytes(),
        ]
        self.stdin.append(b"".join(rec))
        self.expect.append([out.tobytes()])

    def quantize(self, q, groups, _real=cpu.quantize):
        es = 2 if q.bf16 else 4
        total = q.B * q.M * q.N
        grid = q.B * -(-q.M // q.bm) * -(-q.N // q.bn)
        steps = ctypes.string_at(q.steps, STEPS * 4) if q.steps else bytes(STEPS * 4)
        rec = [struct.pack("<I", 2), bytes(q), steps, ctypes.string_at(q.x, total * es)]
        bad = _real(q, groups)
        self.stdin.append(b"".join(rec))
        stored = ctypes.string_at(q.stored, grid) if q.stored else bytes(grid)
        outs = [ctypes.string_at(q.codes, total), ctypes.string_at(q.sgrid, grid * 4), stored]
        self.expect.append([*outs, struct.pack("<q", bad)] if bad == 0 else [None, None, None, struct.pack("<q", bad)])
        return bad

    def dequantize(self, d, groups, _real=cpu.dequantize):
        total = d.B * d.M * d.N
        grid = d.B * -(-d.M // d.bm) * -(-d.N // d.bn)
        _real(d, groups)
        self.stdin.append(
            b"".join(
                [
                    struct.pack("<I", 3),
                    bytes(d),
                    ctypes.string_at(d.codes, total),
                    ctypes.string_at(d.sgrid, grid * 4),
                    ctypes.string_at(d.lut, 1024),
                ]
            )
        )
        self.expect.append([ctypes.string_at(d.out, total * (2 if d.bf16 else 4))])


def adversarial(rng, rows, cols):
    """Gaussian blocks over a wide magnitude range, every bf16 pattern class, ties and zero rows."""
    x = (rng.standard_normal((rows, cols)) * np.exp2(rng.integers(-40, 40, (rows, 1)))).astype(np.float32)
    bits = rng.integers(0, 1 << 16, (2, cols)).astype(np.uint32) << 16
    bits[(bits & 0x7F800000) == 0x7F800000] &= ~np.uint32(0x40000000)  # finite: the kernels' blocks
    x[:2] = bits.view(np.float32)
    x[2] = 0
    x[3, ::3] = np.float32(1.0625)
    return x


def test_aarch64_kernels_match(driver, monkeypatch):
    rec = Recorder(monkeypatch)
    rng = np.random.default_rng(11)
    # element encode: every format and profile, float32 and bf16, specials included
    x = np.concatenate([adversarial(rng, 4, 96).ravel(), [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e-30]])
    x = x.astype(np.float32)
    for p in PROFILES:
        for fmt, spec in FORMATS.items():
            if PROFILES[p].covers(spec):
                fp8port.encode(x, fmt, profile=p)
                fp8port.encode(x.astype(ml_dtypes.bfloat16), fmt, profile=p)
    # block quantize and dequantize: every kernel path (pow2, lean float32, full; rows and tiles; NVFP4)
    schemes = [
        get_preset(n).weight
        for n in ("deepseek-v3.1", "deepseek-v3", "mxfp8", "mxfp4", "mxfp6_e2m3", "mxfp6_e3m2", "mxint8", "nvfp4")
    ]
    schemes += [
        get_preset("deepseek-v3.1").activation,
        get_preset("deepseek-v3").activation.with_(apply="reciprocal"),
        Scheme.build("float8_e5m2", "rceil", "1x64", storage="e8m0", profile="ocp-mx"),
    ]
    x = adversarial(rng, 136, 320)
    for scheme in schemes:
        for arr in (x, x.astype(ml_dtypes.bfloat16)):
            q = fp8port.quantize(arr, scheme, nonfinite="propagate")
            fp8port.dequantize(q, "float32")
            fp8port.dequantize(q, "bfloat16")
    assert len(rec.stdin) > 150  # every call above went through the C kernels
    run = subprocess.run(["qemu-aarch64", str(driver)], input=b"".join(rec.stdin), capture_output=True, timeout=600)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    out, pos, bad = run.stdout, 0, []
    for i, want in enumerate(rec.expect):
        for w, size in zip(want, _sizes(rec.stdin[i], want)):
            got = out[pos : pos + size]
            pos += size
            if w is not None and got != w:
                bad.append(i)
    assert pos == len(out)
    assert not bad, (
        f"{len(bad)} of {len(rec.expect)} calls differ on aarch64, first ops: {[rec.stdin[i][:4] for i in bad[:5]]}"
    )


def _sizes(record: bytes, want: list) -> list[int]:
    """Byte sizes of a call's outputs as the driver writes them (known even where not compared)."""
    op = struct.unpack_from("<I", record)[0]
    if op != 2:
        return [len(w) for w in want]
    q = cpu.Quant.from_buffer_copy(record[4 : 4 + ctypes.sizeof(cpu.Quant)])
    grid = q.B * -(-q.M // q.bm) * -(-q.N // q.bn)
    return [q.B * q.M * q.N, grid * 4, grid, 8]
