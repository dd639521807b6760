"""Quantize / dequantize a 4096x7168 bf16 tensor (1x128, DeepSeek UE8M0): copy vs naive torch vs ours.

Usage: python benchmarks/bench_quant.py [--threads 2] [--repeat 7] [--json]
Results go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def timeit(fn, repeat):
    fn()  # warm-up (compiles / loads cached kernels)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return {"median_ms": statistics.median(ts) * 1e3, "min_ms": min(ts) * 1e3, "runs": repeat}


def make_input(torch, rows=4096, cols=7168, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g)
    mag = torch.exp(3 * torch.randn(rows, cols // 128, 1, generator=g))
    return (x.view(rows, cols // 128, 128) * mag).view(rows, cols).to(torch.bfloat16)


def naive_quant(torch, x):
    """DeepSeek style in torch ops: reshape, amax, clamp, log2 ceil, divide, cast."""
    r, c = x.shape
    xv = x.view(r, c // 128, 128).float()
    amax = xv.abs().amax(-1, keepdim=True).clamp(min=1e-4)
    s = torch.exp2(torch.ceil(torch.log2(amax / 448.0)))
    return (xv / s).to(torch.float8_e4m3fn).view(r, c), s.squeeze(-1)


def naive_dequant(torch, q, s):
    r, c = q.shape
    return (q.view(r, c // 128, 128).float() * s.unsqueeze(-1)).to(torch.bfloat16).view(r, c)


def mse_gain(rows=256, cols=7168):
    """Mean squared error of MSE_POW2 vs RCEIL and FLOOR on Gaussian-with-spread data (mxfp8 blocks)."""
    from fp8port.quant import get_preset, quantize, dequantize

    rng = np.random.default_rng(1)
    x = (rng.standard_normal((rows, cols)) * np.exp(rng.standard_normal((rows, cols // 32, 1)) * 3).repeat(
        32, axis=1).reshape(rows, cols)).astype(np.float32)
    out = {}
    for preset in ("mxfp8", "mxfp4"):
        base = get_preset(preset).activation
        for rule in ("floor", "rceil", "mse_pow2"):
            q = quantize(x, base.with_(scale_rule=rule), backend="reference")
            err = dequantize(q, "float32").astype(np.float64) - x
            out[f"{preset}/{rule}"] = float(np.mean(err**2) / np.mean(x.astype(np.float64) ** 2))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--ref-repeat", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    import numba
    import torch

    torch.set_num_threads(a.threads)
    numba.set_num_threads(a.threads)
    from fp8port.quant import dequantize, quantize

    log("building input ...")
    x = make_input(torch)
    dst = torch.empty_like(x)
    res = {"shape": list(x.shape), "threads": a.threads, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "preset": "deepseek-v3.1 activation (1x128, UE8M0)", "quantize": {}, "dequantize": {}}
    with torch.inference_mode():
        log("copy ..."); res["copy_ms"] = timeit(lambda: dst.copy_(x), a.repeat)
        log("naive quantize ..."); res["quantize"]["naive_torch"] = timeit(lambda: naive_quant(torch, x), a.repeat)
        log("fast quantize ...")
        res["quantize"]["fast"] = timeit(lambda: quantize(x, "deepseek-v3.1", role="activation", backend="fast"),
                                         a.repeat)
        log("reference quantize (slow) ...")
        res["quantize"]["reference"] = timeit(
            lambda: quantize(x, "deepseek-v3.1", role="activation", backend="reference"), a.ref_repeat)
        qn, sn = naive_quant(torch, x)
        q = quantize(x, "deepseek-v3.1", role="activation", backend="fast")
        res["bit_exact_vs_naive"] = bool(torch.equal(q.codes, qn.view(torch.uint8)))
        log("naive dequantize ..."); res["dequantize"]["naive_torch"] = timeit(lambda: naive_dequant(torch, qn, sn),
                                                                              a.repeat)
        log("fast dequantize ..."); res["dequantize"]["fast"] = timeit(lambda: dequantize(q, backend="fast"), a.repeat)
        log("reference dequantize ...")
        res["dequantize"]["reference"] = timeit(lambda: dequantize(q, backend="reference"), a.ref_repeat)
    c = res["copy_ms"]["median_ms"]
    for op in ("quantize", "dequantize"):
        d = res[op]
        d["fast_over_copy"] = d["fast"]["median_ms"] / c
        d["naive_over_fast"] = d["naive_torch"]["median_ms"] / d["fast"]["median_ms"]
        d["reference_over_fast"] = d["reference"]["median_ms"] / d["fast"]["median_ms"]
    log("MSE-optimal power of two vs RCEIL / FLOOR (relative MSE, reference path) ...")
    res["mse_rule_relative_mse"] = mse_gain()

    if a.json:
        print(json.dumps(res, indent=1))
        return
    print(f"4096x7168 bf16, {a.threads} threads, CPU capability {res['cpu_capability']}; median / min ms")
    print(f"  copy into preallocated     {c:9.2f} / {res['copy_ms']['min_ms']:.2f}")
    for op in ("quantize", "dequantize"):
        d = res[op]
        for k in ("naive_torch", "reference", "fast"):
            print(f"  {op:10s} {k:15s} {d[k]['median_ms']:9.2f} / {d[k]['min_ms']:.2f}")
        print(f"  {op:10s} fast/copy = {d['fast_over_copy']:.2f}x   naive/fast = {d['naive_over_fast']:.1f}x   "
              f"reference/fast = {d['reference_over_fast']:.0f}x")
    print(f"  fast codes == naive torch codes: {res['bit_exact_vs_naive']}")
    m = res["mse_rule_relative_mse"]
    for p in ("mxfp8", "mxfp4"):
        f, r, o = m[f"{p}/floor"], m[f"{p}/rceil"], m[f"{p}/mse_pow2"]
        print(f"  relative MSE ({p} 1x32): floor {f:.3e}  rceil {r:.3e}  mse_pow2 {o:.3e}"
              f"  (gain vs rceil {100 * (1 - o / r):.1f}%, vs floor {100 * (1 - o / f):.1f}%)")


if __name__ == "__main__":
    main()
