"""Encode throughput: fp8port's fast path vs its NumPy reference vs ml_dtypes / en_dtypes / torch.

Every implementation encodes the same input array in the same process:
  * float32-lognormal: N(0,1) * exp(3 N(0,1)) float32 values (magnitudes over ~30 binades);
  * bf16-all: all 65,536 bfloat16 bit patterns (NaN, Inf, subnormals included) tiled.
fp8port runs with the profile of the library it is compared with (ml_dtypes, or en_dtypes
for hifloat8), so both produce the same bytes; the script checks that they do. Each
timing is preceded by one untimed warm-up call (Numba compilation, table building).

    python benchmarks/bench_codec.py            # 10M elements, 5 runs each
    python benchmarks/bench_codec.py --quick    # 1M elements, 3 runs (smoke)
    python benchmarks/bench_codec.py --json     # machine-readable results on stdout
    python benchmarks/bench_codec.py --isa avx2 # fp8port's C kernels on a lower ISA tier (or numba)

Results go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import ml_dtypes
import numba
import numpy as np
import torch
from _machine import banner, describe

from fp8port import cpu
from fp8port.codec.api import encode
from fp8port.formats import get_format

FORMATS = (
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float6_e2m3fn",
    "float6_e3m2fn",
    "float4_e2m1fn",
    "hifloat8",
)


def make_inputs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lognormal = (rng.standard_normal(n) * np.exp(3.0 * rng.standard_normal(n))).astype(np.float32)
    all_bf16 = np.arange(1 << 16, dtype=np.uint16).view(ml_dtypes.bfloat16)
    return {"float32-lognormal": lognormal, "bf16-all": np.resize(all_bf16, n)}


def _en_dtypes():
    try:
        import en_dtypes
    except ImportError:
        return None
    return en_dtypes


def implementations(fmt: str, x: np.ndarray) -> tuple[dict, str]:
    """name -> zero-argument callable returning uint8 codes; and the fp8port profile used."""
    spec = get_format(fmt)
    profile = "ml_dtypes" if spec.ml_dtypes else "en_dtypes"
    impls = {
        "fast": lambda: encode(x, fmt, profile=profile, backend="fast"),
        "reference": lambda: encode(x, fmt, profile=profile, backend="reference"),
    }
    if spec.ml_dtypes:
        dtype = getattr(ml_dtypes, spec.ml_dtypes)
        impls["ml_dtypes"] = lambda: x.astype(dtype).view(np.uint8)
    elif (en := _en_dtypes()) is not None:
        en_dtype = getattr(en, spec.en_dtypes)
        # en_dtypes has no bfloat16 cast; widening first is part of what its users pay.
        src = (lambda: x.astype(np.float32)) if x.dtype == ml_dtypes.bfloat16 else (lambda: x)
        impls["en_dtypes"] = lambda: src().astype(en_dtype).view(np.uint8)
    tdtype = getattr(torch, spec.torch, None) if spec.torch else None
    if tdtype is not None and tdtype.itemsize == 1 and spec.bits == 8:  # float4_e2m1fn_x2 has no casts
        t = (
            torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
            if x.dtype == ml_dtypes.bfloat16
            else (torch.from_numpy(x))
        )
        impls["torch"] = lambda: t.to(tdtype)
    return impls, profile


def time_runs(fn, runs: int) -> tuple[list[float], object]:
    # NaN/overflow casts in the libraries warn on every call; the inputs hold them on purpose.
    with np.errstate(invalid="ignore", over="ignore"):
        out = fn()  # warm-up
        times = []
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            out = fn()
            times.append(time.perf_counter_ns() - t0)
    return times, out


def as_bytes(out) -> np.ndarray:
    return out.view(torch.uint8).numpy() if isinstance(out, torch.Tensor) else np.asarray(out).view(np.uint8)


def run(n: int, runs: int, formats=FORMATS) -> dict:
    inputs = make_inputs(n)
    results = []
    for fmt in formats:
        for input_name, x in inputs.items():
            impls, profile = implementations(fmt, x)
            entry = {"format": fmt, "input": input_name, "profile": profile, "impls": {}, "ratios": {}}
            outputs = {}
            for name, fn in impls.items():
                print(f"{fmt:15s} {input_name:18s} {name:10s} ...", file=sys.stderr, flush=True)
                times, out = time_runs(fn, runs)
                outputs[name] = as_bytes(out)
                entry["impls"][name] = {
                    "median_ns_per_elem": statistics.median(times) / n,
                    "min_ns_per_elem": min(times) / n,
                }
            fast = entry["impls"]["fast"]["median_ns_per_elem"]
            for name, timing in entry["impls"].items():
                if name != "fast":
                    entry["ratios"][f"{name}/fast"] = timing["median_ns_per_elem"] / fast
            # torch follows its own profile, so only the same-profile outputs must agree.
            same = [k for k in outputs if k != "torch"]
            entry["bit_exact"] = all(np.array_equal(outputs["fast"], outputs[k]) for k in same)
            results.append(entry)
    return {"environment": environment(n, runs), "results": results}


def environment(n: int, runs: int) -> dict:
    en = _en_dtypes()
    return {
        **describe(),
        "elements": n,
        "runs": runs,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numba_threads": numba.get_num_threads(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        # other work on the machine slows the multi-threaded paths most; read timings with it
        "load_average_1min": os.getloadavg()[0],
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "ml_dtypes": ml_dtypes.__version__,
        "en_dtypes": getattr(en, "__version__", None) if en else None,
        "torch": torch.__version__,
    }


def print_table(report: dict) -> None:
    env = report["environment"]
    print(banner(env))
    print(
        f"encode throughput, {env['elements']:,} elements, median/min of {env['runs']} runs; "
        f"CPU capability {env['cpu_capability']}, numba threads {env['numba_threads']}, "
        f"torch threads {env['torch_threads']}, {env['cpu_count']} CPUs, "
        f"load average {env['load_average_1min']:.2f} at the end"
    )
    header = f"{'format':15s} {'input':18s} {'impl':10s} {'median ns/el':>12s} {'min ns/el':>10s} {'vs fast':>8s}"
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        for name, t in r["impls"].items():
            ratio = r["ratios"].get(f"{name}/fast", 1.0)
            print(
                f"{r['format']:15s} {r['input']:18s} {name:10s} {t['median_ns_per_elem']:12.3f} "
                f"{t['min_ns_per_elem']:10.3f} {ratio:7.2f}x"
            )
        if not r["bit_exact"]:
            print(f"  WARNING: fast, reference and {r['profile']} disagree on this input")
    print("vs fast: median time of the implementation / median time of fp8port fast (>1: fast is faster)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1M elements, 3 runs (smoke run)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    ap.add_argument("--elements", type=int, help="input size (default 10M, or 1M with --quick)")
    ap.add_argument("--runs", type=int, help="timed runs per implementation (default 5, or 3 with --quick)")
    ap.add_argument("--isa", help="ISA tier of the C kernels (scalar, avx2, avx512, neon) or numba; default: the best")
    args = ap.parse_args(argv)
    n = args.elements or (1_000_000 if args.quick else 10_000_000)
    runs = args.runs or (3 if args.quick else 5)
    with cpu.forced(args.isa or (cpu.tier() and cpu.tier().value)):
        report = run(n, runs)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
