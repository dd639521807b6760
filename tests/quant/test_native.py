"""The AVX-512 kernels (quant/native.c): present where they should be, bit-exact with the Numba
kernels and the reference on shapes that take every path, and the out= buffers they write into."""

import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fp8port.errors import UnsupportedInputError
from fp8port.quant import Scheme, dequantize, fast, get_preset, native, quantize

CPU_FLAGS = set(open("/proc/cpuinfo").read().split()) if os.path.exists("/proc/cpuinfo") else set()
needs_native = pytest.mark.skipif(native.level() == 0, reason="native kernels not built or no AVX-512 here")

V31 = get_preset("deepseek-v3.1")
SCHEMES = [V31.activation, V31.weight, get_preset("mxfp8").activation,
           get_preset("mxfp8").activation.with_(scale_rule="rceil"),
           get_preset("mxfp8").activation.with_(scale_rule="even", zero_block="unit"),
           # FLOOR overflows the element range and the default profile turns that into NaN (0x7F)
           Scheme.build("float8_e4m3fn", "floor", "1x32", storage="e8m0", profile="default")]


def test_schemes_cover_both_overflow_caps():
    assert {fast._e4m3_cap(s.element, s.rules) for s in SCHEMES} == {0x7E, 0x7F}


def test_built_and_used_where_the_cpu_has_avx512():
    """A CI machine with AVX-512 must not silently fall back to Numba (the speed claims rest on it)."""
    if os.environ.get("FP8PORT_NATIVE") == "0":
        pytest.skip("disabled by FP8PORT_NATIVE=0")
    if not {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= CPU_FLAGS:
        pytest.skip("this CPU lacks AVX-512")
    assert native.level() == (2 if "avx512vbmi" in CPU_FLAGS else 1)


def test_env_switch_disables_it():
    code = "from fp8port.quant import native; print(native.level())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "FP8PORT_NATIVE": "0"})
    assert out.stdout.strip() == "0"


FORK_SCRIPT = """
import faulthandler, os, sys
import numpy as np
from fp8port.quant import dequantize, quantize
x = np.random.default_rng(0).standard_normal((512, 1024)).astype(np.float32)
q = quantize(x, "deepseek-v3.1", role="activation")        # the parent starts its OpenMP threads
pid = os.fork()
if pid == 0:
    faulthandler.dump_traceback_later(20, exit=True)         # a hang fails instead of blocking CI
    q2 = quantize(x, "deepseek-v3.1", role="activation")
    same = np.array_equal(q.codes, q2.codes) and np.array_equal(dequantize(q), dequantize(q2))
    os._exit(0 if same else 3)
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


@needs_native
def test_forked_child_runs_the_kernels():
    """GNU OpenMP hangs in a child forked after its parent used it (torch's kernels do); a forked
    child runs the native kernels on its one thread instead, with the same bytes."""
    run = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def adversarial_bf16(rng, rows, cols, low=1):
    """Blocks of 32 whose elements sit within 24 binades below the block's top exponent, the top
    swept over the bf16 range from `low` up: every E4M3 range after scaling (normal, subnormal,
    ties, underflow to zero, bf16 subnormal inputs), plus exact ties of the rounding and zero rows.
    From low=34 up no block needs a scale below 2^-102 (and below 254 none overflows the EVEN
    rule), so the native kernel does every block."""
    nb = rows * cols // 32
    top = rng.integers(low, 254, nb)[:, None]
    expo = np.clip(top - rng.integers(0, 25, (nb, 32)), 0, 254)
    expo[:, 0] = top[:, 0]  # the block's amax has the top exponent
    bits = (rng.integers(0, 2, (nb, 32)) << 15) | (expo << 7) | rng.integers(0, 128, (nb, 32))
    bits = bits.reshape(rows, cols).astype(np.uint16)
    bits[0] = 0
    bits[1, ::3] = 0x3F88  # 1.0625: a tie between E4M3 codes once scaled by 2^0
    return bits.view(ml_dtypes.bfloat16)


def numba_only(monkeypatch, fn):
    with monkeypatch.context() as m:
        m.setattr(native, "level", lambda: 0)
        return fn()


def assert_same_q(a, b):
    assert np.array_equal(np.asarray(a.codes), np.asarray(b.codes))
    assert np.array_equal(np.asarray(a.scale_fp32).view(np.uint32), np.asarray(b.scale_fp32).view(np.uint32))


@needs_native
@pytest.mark.parametrize("fp16", [True, False], ids=["fp16-subnormals", "shift-subnormals"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: f"{s.name}:{s.scale_rule.value}:{s.block}")
def test_equals_numba_and_reference(scheme, threads, dtype, fp16, monkeypatch):
    """Uneven thread splits (3 threads on 200 row groups) and partial 128-row tiles included;
    float32 input gets 16 random low mantissa bits on top (ties and sticky bits of its own);
    E4M3 subnormals both ways where the CPU has AVX512-FP16."""
    if fp16 and not native.fp16():
        pytest.skip("this CPU lacks AVX512-FP16")
    monkeypatch.setattr(native, "fp16", lambda: fp16)
    monkeypatch.setattr(native, "threads", lambda: threads)
    rng = np.random.default_rng(threads)
    x = adversarial_bf16(rng, 200, 512, low=34)
    if dtype == "float32":
        bits = x.view(np.uint16).astype(np.uint32) << 16
        bits[2:] |= rng.integers(0, 1 << 16, bits[2:].shape, dtype=np.uint32) * (rng.random(bits[2:].shape) < 0.7)
        x = bits.view(np.float32)
    done = []
    kernel = native.quantize_pow2
    monkeypatch.setattr(native, "quantize_pow2", lambda *a: done.append(kernel(*a)) or done[-1])
    q = quantize(x, scheme, backend="fast", nonfinite="propagate")
    assert done == [True]  # the native kernel did every block: no fallback hid a difference
    assert_same_q(q, numba_only(monkeypatch, lambda: quantize(x, scheme, backend="fast", nonfinite="propagate")))
    assert_same_q(q, quantize(x, scheme, backend="reference", nonfinite="propagate"))
    for dt in ("bfloat16", "float32"):
        want = dequantize(q, dt, backend="reference")
        assert np.array_equal(dequantize(q, dt, backend="fast").view(np.uint8), want.view(np.uint8))


@needs_native
@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 300), nblk=st.integers(1, 6),
       which=st.integers(0, len(SCHEMES) - 1), spread=st.integers(0, 60), f32=st.booleans())
def test_property_random_bits(seed, rows, nblk, which, spread, f32):
    """Gaussian blocks with magnitudes spread over 2^+-spread and 2 % random finite bit patterns,
    as bf16 or float32: native == reference."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, 128 * nblk)) * np.exp2(rng.integers(-spread, spread + 1, (rows, 1))))
    bits = x.astype(np.float32).view(np.uint32) >> (0 if f32 else 16)
    wild = rng.random(bits.shape) < 0.02
    bits[wild] = rng.integers(0, 1 << (32 if f32 else 16), int(wild.sum()), dtype=np.uint64).astype(np.uint32)
    expo = 0x7F800000 if f32 else 0x7F80
    bits[(bits & expo) == expo] &= ~np.uint32(expo >> 1)  # keep it finite: Inf / NaN blocks are Numba's
    xs = bits.view(np.float32) if f32 else bits.astype(np.uint16).view(ml_dtypes.bfloat16)
    scheme = SCHEMES[which]
    assert_same_q(quantize(xs, scheme, backend="fast"), quantize(xs, scheme, backend="reference"))


RULE_ARGS = [(rule, np.float32(448.0), np.float32(clamp), clamp > 0, -127, 127, 8, 3, unit)
             for rule in (0, 2, 3, 4, 5) for clamp in (0.0, 1e-4) for unit in (False, True)]


@pytest.mark.parametrize("args", RULE_ARGS, ids=lambda a: f"rule{a[0]}-clamp{a[3]}-unit{a[8]}")
def test_scale_steps_reproduce_the_rule(args):
    """The kernel's step form of a rule equals fast._block_scale on every exponent field's edges
    and on 20,000 random amax patterns (the bisection assumes the rule is monotone in amax)."""
    steps = fast.scale_steps(args)
    assert steps is not None
    thr, sb, zero = steps[:768].reshape(256, 3), steps[768:1792].reshape(256, 4), steps[1792]
    rng = np.random.default_rng(0)
    f = np.arange(255, dtype=np.uint32)
    a = np.concatenate([rng.integers(1, 0x7F800000, 20_000, dtype=np.uint32), f << 23, (f << 23) | 0x7FFFFF,
                        (f << 23) | 0x600000, (f << 23) | 0x600001, (f << 23) | 0x5FFFFF])
    a = a[a > 0]
    e, m = a >> 23, a & 0x7FFFFF
    got = sb[e, (m >= thr[e, 0]).astype(int) + (m >= thr[e, 1]) + (m >= thr[e, 2])]
    tu = np.empty(1, np.uint32)
    want = np.array([fast._block_scale(int(v), *args, tu, tu.view(np.float32)) for v in a], np.uint32)
    assert np.array_equal(got, want)
    assert zero == fast._block_scale(0, *args, tu, tu.view(np.float32))


@needs_native
def test_blocks_it_cannot_do_fall_back_to_the_general_kernel(monkeypatch):
    """Inf/NaN in a block, and a block so small that E < -102: the whole tensor is redone by Numba."""
    x = adversarial_bf16(np.random.default_rng(0), 64, 256).astype(np.float32)
    x[3, 5] = np.inf
    x[7, :128] = 2.0**-130
    x = x.astype(ml_dtypes.bfloat16)
    q = quantize(x, V31.activation, backend="fast", nonfinite="propagate")
    assert_same_q(q, quantize(x, V31.activation, backend="reference", nonfinite="propagate"))
    with pytest.raises(Exception, match="inf|Inf|non-finite"):
        quantize(x, V31.activation, backend="fast")


@needs_native
def test_large_tensor_streaming_path(monkeypatch):
    """Outputs over native._STREAM_BYTES take non-temporal stores; same bytes as Numba."""
    rng = np.random.default_rng(9)
    x = torch.from_numpy(adversarial_bf16(rng, 2048, 4096).view(np.int16)).view(torch.bfloat16)
    assert x.numel() >= native._STREAM_BYTES
    for scheme in (V31.activation, V31.weight):
        q = quantize(x, scheme, nonfinite="propagate")
        assert_same_q(q, numba_only(monkeypatch, lambda: quantize(x, scheme, nonfinite="propagate")))
        got = dequantize(q)
        want = numba_only(monkeypatch, lambda: dequantize(q))
        assert torch.equal(got.view(torch.int16), want.view(torch.int16))


def test_dequant_tables_refuse_values_that_are_not_bfloat16():
    """The vector dequantize adds E << 7 to a bf16 pattern: only exact where every decoded value is
    a bf16. E4M3 and E5M2 qualify; a table with a 24-bit-mantissa value does not."""
    for fmt in ("float8_e4m3fn", "float8_e5m2"):
        from fp8port.formats import get_format

        assert native._dequant_tables(fast.decode_lut(get_format(fmt)).astype(np.float32).tobytes()) is not None
    lut = np.zeros(256, np.float32)
    lut[1] = np.float32(1 + 2.0**-20)
    assert native._dequant_tables(lut.tobytes()) is None


@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_out_buffers_are_reused(framework):
    rng = np.random.default_rng(2)
    x = adversarial_bf16(rng, 64, 256)
    y = adversarial_bf16(rng, 64, 256)
    if framework == "torch":
        x, y = (torch.from_numpy(a.view(np.int16)).view(torch.bfloat16) for a in (x, y))
    for scheme in (V31.activation, V31.weight, get_preset("deepseek-v3").activation):
        q = quantize(x, scheme)
        codes = q.codes
        q2 = quantize(y, scheme, out=q)
        assert q2.codes is codes or np.shares_memory(np.asarray(q2.codes), np.asarray(codes))
        assert_same_q(q2, quantize(y, scheme))
        assert np.array_equal(np.asarray(q2.scale).view(np.uint8), np.asarray(quantize(y, scheme).scale).view(np.uint8))
        out = torch.empty(64, 256, dtype=torch.bfloat16) if framework == "torch" else np.empty((64, 256), ml_dtypes.bfloat16)
        res = dequantize(q2, out=out)
        assert res is out
        want = dequantize(quantize(y, scheme))
        assert np.array_equal(np.asarray(res.view(torch.int16) if framework == "torch" else res.view(np.int16)),
                              np.asarray(want.view(torch.int16) if framework == "torch" else want.view(np.int16)))
        f32 = np.empty((64, 256), np.float32)
        if framework == "numpy":
            assert dequantize(q2, "float32", out=f32) is f32
            assert np.array_equal(f32, dequantize(q2, "float32"))


def test_out_mismatches_are_clear_errors():
    x = np.ones((4, 256), np.float32)
    q = quantize(x, V31.activation)
    with pytest.raises(UnsupportedInputError, match=r"\(4, 128\)"):
        quantize(np.ones((4, 128), np.float32), V31.activation, out=q)
    with pytest.raises(UnsupportedInputError, match="deepseek-v3.1"):
        quantize(x, get_preset("mxfp8").activation, out=q)
    with pytest.raises(UnsupportedInputError, match="QuantizedTensor"):
        quantize(x, V31.activation, out=np.empty((4, 256), np.uint8))
    with pytest.raises(UnsupportedInputError, match="dtype"):
        dequantize(q, "bfloat16", out=np.empty((4, 256), np.float32))
    with pytest.raises(UnsupportedInputError, match="contiguous"):
        dequantize(q, "float32", out=np.empty((256, 4), np.float32).T)
