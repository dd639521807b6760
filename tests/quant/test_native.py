"""The C kernels (fp8port/cpu): built and used where they should be, each ISA tier bit-exact with the
Numba kernels and the reference on shapes that take every path, and the out= buffers they write into."""

import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fp8port import cpu
from fp8port.arrays import to_numpy
from fp8port.errors import UnsupportedInputError
from fp8port.quant import ScaleRule, Scheme, dequantize, fast, get_preset, native, quantize, reference, steps

CPU_FLAGS = set(open("/proc/cpuinfo").read().split()) if os.path.exists("/proc/cpuinfo") else set()
TIERS = tuple(t.value for t in cpu.tiers())
needs_native = pytest.mark.skipif(not TIERS, reason="C kernels not built here")

V31 = get_preset("deepseek-v3.1")
SCHEMES = [
    V31.activation,
    V31.weight,
    get_preset("mxfp8").activation,
    get_preset("mxfp8").activation.with_(scale_rule="rceil"),
    get_preset("mxfp8").activation.with_(scale_rule="even", zero_block="unit"),
    # FLOOR overflows the element range and the default profile turns that into NaN (0x7F)
    Scheme.build("float8_e4m3fn", "floor", "1x32", storage="e8m0", profile="default"),
    get_preset("mxfp4").weight,
    get_preset("mxfp6_e2m3").weight,
    get_preset("mxfp6_e3m2").weight,
    get_preset("nvfp4").weight,
    get_preset("mxint8").weight,
    get_preset("deepseek-v3").activation,
    Scheme.build("float8_e5m2", "ceil", "1x64", storage="e8m0", profile="ocp-mx"),
]


def test_built_and_used_where_the_cpu_has_them():
    """A CI machine must not silently fall back to Numba: every tier its CPU has is built and runs."""
    if os.environ.get("FP8PORT_NATIVE") == "0":
        pytest.skip("disabled by FP8PORT_NATIVE=0")
    want = ["scalar"] if cpu.tiers() and "neon" not in TIERS else []
    if {"avx2", "fma", "bmi2"} <= CPU_FLAGS:
        want.append("avx2")
        if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= CPU_FLAGS:
            want.append("avx512")
    assert TIERS == tuple(want)
    assert cpu.tier().value == want[-1]


@pytest.mark.parametrize(
    "env,want",
    [
        ({"FP8PORT_NATIVE": "0"}, "None"),
        ({"FP8PORT_ISA": "scalar"}, "scalar"),
        ({"FP8PORT_ISA": "AVX512"}, "avx512"),
        ({"FP8PORT_ISA": "sse9"}, "error"),
    ],
)
def test_env_switches(env, want):
    if want == "avx512" and "avx512" not in TIERS:
        pytest.skip("this CPU lacks AVX-512")
    code = (
        "from fp8port import cpu\ntry:\n    t = cpu.tier()\n    print(None if t is None else t.value)\n"
        "except Exception as e:\n    print('error', e)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, **env}
    ).stdout
    assert out.split()[0] == want, out
    if want == "error":
        assert "scalar" in out  # the message lists the tiers this CPU has


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


def assert_same_q(a, b):
    assert np.array_equal(np.asarray(a.codes), np.asarray(b.codes))
    assert np.array_equal(np.asarray(a.scale_fp32).view(np.uint32), np.asarray(b.scale_fp32).view(np.uint32))
    assert np.array_equal(np.asarray(a.scale).view(np.uint8), np.asarray(b.scale).view(np.uint8))
    assert a.tensor_scale == b.tensor_scale


def on(kernel, fn, whole=True):
    """fn() with backend='fast' routed to `kernel`; for a C tier (whole), checked to have done every block."""
    done = []
    real = native.quantize
    native.quantize = lambda *a: done.append(real(*a)) or done[-1]
    try:
        with cpu.forced(kernel):
            out = fn()
    finally:
        native.quantize = real
    if kernel != "numba" and whole:
        assert done and all(d is not None for d in done), "the C kernel left blocks to another kernel"
    return out


@needs_native
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: f"{s.name}:{s.scale_rule.value}:{s.block}")
def test_equals_reference_and_numba(scheme, tier, threads, dtype, monkeypatch):
    """Uneven thread splits (3 threads over 200 row groups) and partial 128-row tiles included;
    float32 input gets 16 random low mantissa bits on top (ties and sticky bits of its own)."""
    monkeypatch.setattr(cpu, "threads", lambda: threads)
    rng = np.random.default_rng(threads)
    x = adversarial_bf16(rng, 200, 512, low=34)
    if dtype == "float32":
        bits = x.view(np.uint16).astype(np.uint32) << 16
        bits[2:] |= rng.integers(0, 1 << 16, bits[2:].shape, dtype=np.uint32) * (rng.random(bits[2:].shape) < 0.7)
        x = bits.view(np.float32)
    q = on(tier, lambda: quantize(x, scheme, backend="fast", nonfinite="propagate"))
    assert_same_q(q, quantize(x, scheme, backend="reference", nonfinite="propagate"))
    if fast.numba_unsupported_reason(scheme) is None:
        assert_same_q(q, on("numba", lambda: quantize(x, scheme, backend="fast", nonfinite="propagate")))
    for dt in ("bfloat16", "float32"):
        want = dequantize(q, dt, backend="reference")
        with cpu.forced(tier):
            assert np.array_equal(dequantize(q, dt, backend="fast").view(np.uint8), want.view(np.uint8))


@needs_native
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 300),
    nblk=st.integers(1, 6),
    which=st.integers(0, len(SCHEMES) - 1),
    spread=st.integers(0, 60),
    f32=st.booleans(),
    tier=st.sampled_from(TIERS or ("scalar",)),
    ragged=st.integers(0, 31),
)
def test_property_random_bits(seed, rows, nblk, which, spread, f32, tier, ragged):
    """Gaussian blocks with magnitudes spread over 2^+-spread, 2 % random finite bit patterns and a
    ragged last block, as bf16 or float32: each C tier == reference."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 128 * nblk + ragged)) * np.exp2(rng.integers(-spread, spread + 1, (rows, 1)))
    bits = x.astype(np.float32).view(np.uint32) >> (0 if f32 else 16)
    wild = rng.random(bits.shape) < 0.02
    bits[wild] = rng.integers(0, 1 << (32 if f32 else 16), int(wild.sum()), dtype=np.uint64).astype(np.uint32)
    expo = 0x7F800000 if f32 else 0x7F80
    bits[(bits & expo) == expo] &= ~np.uint32(expo >> 1)  # keep it finite: Inf / NaN blocks are Numba's
    xs = bits.view(np.float32) if f32 else bits.astype(np.uint16).view(ml_dtypes.bfloat16)
    scheme = SCHEMES[which]
    # random patterns near the float32 max can give EVEN a NaN scale: such a block is handed on, so
    # only the bytes are checked here
    assert_same_q(
        on(tier, lambda: quantize(xs, scheme, backend="fast", nonfinite="propagate"), whole=False),
        quantize(xs, scheme, backend="reference", nonfinite="propagate"),
    )


POW2_RULES = [r for r in ScaleRule if r.power_of_two and r.fn is not None]  # rules added later included


@pytest.mark.parametrize("rule", POW2_RULES, ids=lambda r: r.value)
@pytest.mark.parametrize("variant", ["mxfp8", "mxfp4-unit", "clamp-range", "bf16-storage"])
def test_step_tables_reproduce_the_rule(rule, variant):
    """A power-of-two rule's step form (every kernel's scale lookup) equals the reference's scale on
    every exponent field's edges and on 20,000 random amax patterns, or the rule is left to the
    reference (step_table None; then quantize must still agree through the reference)."""
    base = {
        "mxfp8": get_preset("mxfp8").activation,
        "mxfp4-unit": get_preset("mxfp4").activation.with_(zero_block="unit"),
        "clamp-range": V31.activation,
        "bf16-storage": V31.activation,
    }[variant]
    scheme = base.with_(scale_rule=rule, **({"storage": "bfloat16"} if variant == "bf16-storage" else {}))
    table = steps.step_table(scheme)
    if table is None:
        assert native.unsupported_reason(scheme) is not None
        return
    rng = np.random.default_rng(0)
    f = np.arange(256, dtype=np.uint32)
    a = np.concatenate(
        [
            rng.integers(0, 0x7FFFFFFF, 20_000, dtype=np.uint32),
            f << 23,
            (f << 23) | 0x7FFFFF,
            (f << 23) | 0x600000,
            (f << 23) | 0x600001,
            (f << 23) | 0x5FFFFF,
            [0],
        ]
    ).astype(np.uint32)
    want = reference.block_scales(a.view(np.float32), scheme).view(np.uint32)
    assert np.array_equal(steps.lookup(table, a), want)


@needs_native
@pytest.mark.parametrize("tier", TIERS)
def test_blocks_it_cannot_do_fall_back(tier):
    """Inf/NaN in a block: the whole tensor is redone by Numba (NVFP4: by the reference)."""
    x = adversarial_bf16(np.random.default_rng(0), 64, 256).astype(np.float32)
    x[3, 5] = np.inf
    x[7, :128] = 2.0**-130
    x = x.astype(ml_dtypes.bfloat16)
    with cpu.forced(tier):
        for scheme in (V31.activation, get_preset("nvfp4").weight):
            q = quantize(x, scheme, backend="auto", nonfinite="propagate")
            assert_same_q(q, quantize(x, scheme, backend="reference", nonfinite="propagate"))
        with pytest.raises(Exception, match="inf|Inf|non-finite"):
            quantize(x, V31.activation, backend="fast")


@needs_native
@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")  # the reference's inf * 0
@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float32])
@pytest.mark.parametrize("tier", TIERS)
def test_nvfp4_rows_edge_scales(tier, dtype):
    """NVFP4's one-pass rows at the edges of the tensor scale: a tensor amax near 3e-40 (1 / p overflows
    float32, so the row kernel hands every row to the general path), near 4e37, an all-zero block and
    an all-zero tensor (p = 1): the bytes equal the reference's."""
    rng = np.random.default_rng(5)
    scheme = get_preset("nvfp4").weight
    for scale in (1e-40, 1e37, 1.0, 0.0):
        x = (rng.standard_normal((6, 256)) * scale).astype(np.float32)
        x[0, :16] = 0
        x = x.astype(dtype)
        q = on(tier, lambda x=x: quantize(x, scheme, backend="fast", nonfinite="propagate"))
        assert_same_q(q, quantize(x, scheme, backend="reference", nonfinite="propagate"))


def _nvfp4_tie_rows(rng, cols=256):
    """bf16 rows whose scaled values y = x * mul hit every E2M1 midpoint exactly and one bf16 step either
    side: the tensor amax 2688 = 448 * 6 makes p = 1, a block of amax 6 * 2^k has s_blk = 2^k, so its y
    is x * 2^-k exactly (k from -6, the smallest E4M3 normal, up to 8). Row 0 holds the tensor amax."""
    mids = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], np.float32)
    bits = mids.astype(ml_dtypes.bfloat16).view(np.uint16).astype(np.int32)
    vals = np.concatenate([bits - 1, bits, bits + 1]).astype(np.uint16).view(ml_dtypes.bfloat16).astype(np.float32)
    rows = []
    for k in range(-6, 9):
        blocks = []
        for j in range(cols // 16):
            v = np.resize(np.roll(vals, j), 15) * rng.choice([-1, 1], 15)
            blocks.append(np.concatenate([[6.0], v]) * np.float32(2.0**k))
        rows.append(np.concatenate(blocks))
    x = np.stack(rows).astype(np.float32)
    x[0, 0] = 2688.0
    x[1, 16:32] = 0  # an all-zero block, and a -0
    x[1, 33] = -0.0
    return x


@needs_native
@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float32])
@pytest.mark.parametrize("tier", TIERS)
def test_nvfp4_rows_ties_at_every_midpoint(tier, dtype):
    """Exact ties of every E2M1 midpoint (0.25 and 1.25, 2.5, 5 round down to even; 0.75, 1.75, 3.5
    up) and the bf16 values beside them, in blocks of every power-of-two E4M3 scale; plus blocks whose
    scale clamps to E4M3's smallest normal (amax 6e-6 times the tensor's, a subnormal s_blk would be
    below it), whose y are small: the bytes equal the reference's (the cell table's and the lean
    encoder's ties alike)."""
    rng = np.random.default_rng(11)
    scheme = get_preset("nvfp4").weight
    x = _nvfp4_tie_rows(rng)
    x = np.concatenate([x, rng.standard_normal((3, 256)).astype(np.float32) * 2688 * 6e-6])
    x = x.astype(dtype)
    q = on(tier, lambda: quantize(x, scheme, backend="fast"))
    assert_same_q(q, quantize(x, scheme, backend="reference"))


@needs_native
@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
@pytest.mark.parametrize("tier", TIERS)
def test_nvfp4_scales_near_every_e4m3_midpoint(tier, dtype):
    """The block scale before rounding to E4M3, fp32(fp32(amax / 6) / p), computed by two multiplications
    and redone by the divisions near a rounding midpoint: float32 block amaxes 40 ulps either side of
    the amax that puts it on every E4M3 midpoint from 2^-6 to 448 (and on the E4M3 values), under a p
    that is not a power of two; then the same rows in bf16 (amaxes rounded, random distances). Same
    bytes as the reference."""
    rng = np.random.default_rng(14)
    scheme = get_preset("nvfp4").weight
    tmax = np.float32(2688 * 1.37)
    p = np.float32(tmax / np.float32(2688))
    grid = np.exp2(np.arange(-6, 9, dtype=np.float64))[:, None] * (1 + np.arange(16) / 16)[None, :]
    amax0 = (grid.ravel() * 6 * np.float64(p)).astype(np.float32)
    steps = np.arange(-40, 41)
    amax = (amax0.view(np.int32)[:, None] + steps[None, :]).view(np.float32).ravel()
    amax = amax[amax < tmax]
    blocks = rng.uniform(-1, 1, (amax.size, 16)).astype(np.float32) * amax[:, None]
    blocks[:, 0] = amax
    pad = -blocks.shape[0] % 16
    blocks = np.concatenate([blocks, np.zeros((pad, 16), np.float32)]).reshape(-1, 256)
    blocks[0, 0] = tmax
    x = blocks.astype(dtype)
    q = on(tier, lambda: quantize(x, scheme, backend="fast"))
    assert_same_q(q, quantize(x, scheme, backend="reference"))


def _nvfp4_products_miscode(rng, want=4):
    """(tensor amax, block amax) pairs where fp32(fp32(a * fp32(1/6)) * fp32(1/p)) rounds to another E4M3
    code than the reference's fp32(fp32(a / 6) / p): a few ulps either side of E4M3 midpoints, random p."""
    f = np.float32
    mids = (np.exp2(np.arange(-6, 9.0))[:, None] * (1 + (np.arange(8) + 0.5) / 8)[None, :]).ravel()

    def code(bs):
        b = np.clip(bs, f(2**-6), f(448)).view(np.uint32).astype(np.int64)
        return (b + 0x7FFFF + ((b >> 20) & 1)) >> 20

    found = []
    while len(found) < want:
        tmax = f(2688 * rng.uniform(0.5, 2.0) * 2.0 ** rng.integers(-20, 20))
        p = f(tmax / f(2688))
        a0 = (mids * 6 * float(p)).astype(f)
        a = (a0.view(np.int32)[:, None] + np.arange(-8, 9)[None, :]).view(f).ravel()
        a = a[a <= tmax]
        exact = (a / f(6)).astype(f) / p
        products = (a * (f(1) / f(6))).astype(f) * (f(1) / p)
        found += [(tmax, v) for v in a[code(exact) != code(products)][:1]]
    return found


@needs_native
@pytest.mark.parametrize("tier", TIERS)
def test_nvfp4_scales_where_products_round_elsewhere(tier):
    """Blocks whose scale the two multiplications alone would round to another E4M3 code (found by
    search): the kernel's redo by division gives the reference's bytes."""
    rng = np.random.default_rng(15)
    scheme = get_preset("nvfp4").weight
    for tmax, a in _nvfp4_products_miscode(rng):
        x = (rng.uniform(-1, 1, (2, 256)) * a).astype(np.float32)
        x[0, 0], x[1, 0] = tmax, a
        q = on(tier, lambda x=x: quantize(x, scheme, backend="fast"))
        assert_same_q(q, quantize(x, scheme, backend="reference"))


@needs_native
@pytest.mark.parametrize("tier", TIERS)
def test_nvfp4_cells_block_and_lane_order(tier):
    """The cell kernels take a step's block multipliers from one vector of 8 and widen even and odd
    elements apart (a 32-bit lane holds two bf16): every block of a 128-element step gets its own amax
    (a swapped multiplier changes codes), and every finite bf16 magnitude sits in even and odd places of
    blocks of every scale; same bytes as the reference."""
    rng = np.random.default_rng(13)
    scheme = get_preset("nvfp4").weight
    mags = np.arange(0, 0x7F80, dtype=np.uint16)  # every finite bf16 magnitude (+0 included)
    vals = mags.view(ml_dtypes.bfloat16).astype(np.float32)
    rows = []
    for shift in (0, 1):  # each value once at an even place, once at an odd one
        v = np.roll(vals, shift)[: (vals.size // 1024) * 1024].reshape(-1, 64, 16)
        amax = np.exp2(rng.integers(-12, 12, v.shape[:2] + (1,))).astype(np.float32)
        v = v / np.maximum(np.abs(v).max(axis=2, keepdims=True), np.float32(1e-30)) * amax
        rows.append((v * rng.choice([-1, 1], v.shape)).reshape(-1, 1024))
    x = np.concatenate(rows).astype(ml_dtypes.bfloat16)
    q = on(tier, lambda: quantize(x, scheme, backend="fast"))
    assert_same_q(q, quantize(x, scheme, backend="reference"))


@needs_native
@pytest.mark.parametrize("tier", TIERS)
def test_nvfp4_rows_two_threads_random(monkeypatch, tier):
    """Heavy-tailed bf16 rows (every binade of y, both signs) over two threads with an odd row count:
    the first pass keeps each row's block amaxes for the row pass of the same thread; same bytes as
    the reference."""
    monkeypatch.setattr(cpu, "threads", lambda: 2)
    rng = np.random.default_rng(12)
    scheme = get_preset("nvfp4").weight
    x = (rng.standard_normal((37, 384)) * np.exp2(rng.integers(-20, 20, (37, 384)))).astype(ml_dtypes.bfloat16)
    q = on(tier, lambda: quantize(x, scheme, backend="fast"))
    assert_same_q(q, quantize(x, scheme, backend="reference"))


def test_nvfp4_cell_table_reads_the_reference():
    """The cell table (cpu/nvfp4_cells.h) equals the reference's code at random points inside every
    cell and below the first; formats with more mantissa bits get none (a cell would hold a boundary)."""
    from fp8port.codec import native as codec_native
    from fp8port.codec import reference as codec_reference

    el = get_preset("nvfp4").weight
    base, tab = codec_native.cells(el.element, el.rules)
    rng = np.random.default_rng(13)
    cell = np.repeat(np.arange(base - 16, base + codec_native.NCELLS), 64)
    grid = (cell >> 1) << 21
    bits = np.where(cell & 1, grid + rng.integers(1, 1 << 21, cell.size), grid).astype(np.uint32)
    want = codec_reference.encode(bits.view(np.float32).astype(np.float64), el.element, el.rules) & 7
    got = tab[np.clip(cell - base, 0, None)]
    assert np.array_equal(got, want)
    e4m3 = get_preset("mxfp8").activation
    assert codec_native.cells(e4m3.element, e4m3.rules) is None


@needs_native
@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("stream", [True, False], ids=["non-temporal", "cached"])
def test_large_tensor_both_threads(monkeypatch, stream, tier):
    """A tensor large enough that each thread takes many row groups, its codes (dequantize: its
    output) written around the cache (and, forced, through it); same bytes as Numba."""
    monkeypatch.setattr(cpu, "threads", lambda: 2)
    monkeypatch.setattr(native, "STREAM_BYTES", 0 if stream else 1 << 62)
    rng = np.random.default_rng(9)
    x = torch.from_numpy(adversarial_bf16(rng, 2048, 4096).view(np.int16)).view(torch.bfloat16)
    for scheme in (V31.activation, V31.weight):
        q = on(tier, lambda s=scheme: quantize(x, s, nonfinite="propagate"), whole=False)
        assert_same_q(q, on("numba", lambda s=scheme: quantize(x, s, nonfinite="propagate")))
        got = on(tier, lambda q=q: dequantize(q), whole=False)
        want = on("numba", lambda q=q: dequantize(q))
        assert torch.equal(got.view(torch.int16), want.view(torch.int16))


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
        out = (
            torch.empty(64, 256, dtype=torch.bfloat16)
            if framework == "torch"
            else np.empty((64, 256), ml_dtypes.bfloat16)
        )
        res = dequantize(q2, out=out)
        assert res is out
        want = dequantize(quantize(y, scheme))
        assert np.array_equal(
            np.asarray(res.view(torch.int16) if framework == "torch" else res.view(np.int16)),
            np.asarray(want.view(torch.int16) if framework == "torch" else want.view(np.int16)),
        )
        f32 = np.empty((64, 256), np.float32)
        if framework == "numpy":
            assert dequantize(q2, "float32", out=f32) is f32
            assert np.array_equal(f32, dequantize(q2, "float32"))


@pytest.mark.parametrize("framework", ["numpy", "torch"])
@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("preset", ["mxfp8", "mxfp4", "deepseek-v3.1"])
def test_out_scales_are_written_in_place(monkeypatch, preset, axis, tier, framework):
    """out= takes the scales where the kernels write them (no copy after the call: MX's float32 grid is a
    quarter of the codes' bytes), and they equal a fresh call's on every tier; a block along another
    axis (the kernels see a moved copy) still fills out= by copying."""
    rng = np.random.default_rng(3)
    scheme = get_preset(preset).activation
    scheme = scheme.with_(block="1x32(axis=0)") if axis == 0 else scheme
    x, y = adversarial_bf16(rng, 64, 256), adversarial_bf16(rng, 64, 256)
    if framework == "torch":
        x, y = (torch.from_numpy(a.view(np.int16)).view(torch.bfloat16) for a in (x, y))
    q = on(tier, lambda: quantize(x, scheme, nonfinite="propagate"), whole=False)
    s_fp32, stored = to_numpy(q.scale_fp32), to_numpy(q.scale)
    grids, real = [], native.quantize  # the float32 grid each kernel call fills (argument 5)
    monkeypatch.setattr(native, "quantize", lambda *a: grids.append(a[5]) or real(*a))
    q2 = on(tier, lambda: quantize(y, scheme, nonfinite="propagate", out=q), whole=False)
    want = on(tier, lambda: quantize(y, scheme, nonfinite="propagate"), whole=False)
    assert np.shares_memory(to_numpy(q2.scale_fp32), s_fp32) and np.shares_memory(to_numpy(q2.scale), stored)
    assert np.shares_memory(grids[0], s_fp32) == (axis == -1)
    for got, ref in ((q2.codes, want.codes), (q2.scale_fp32, want.scale_fp32), (q2.scale, want.scale)):
        assert np.array_equal(to_numpy(got).view(np.uint8), to_numpy(ref).view(np.uint8))


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
