"""Quantize / dequantize a 4096x7168 bf16 (and float32) tensor (DeepSeek UE8M0, MXFP8, MXFP4, NVFP4):
copy vs naive torch vs ours.

Usage: python benchmarks/bench_quant.py [--threads 2] [--rounds 15] [--mode loops|shuffled] [--isa avx2]
                                       [--clock wall|cpu] [--rows 4096] [--json]
--isa runs fp8port's C kernels on a lower ISA tier of this CPU (or "numba": without them).
loops (default): each operation --rounds times in a row after two warm-up calls (the input stays in
cache, as in shared/NOTES.md section 4), the copy again before each (its figure is the median of all);
shuffled: every round times each operation once, in a shuffled order, so each meets a cache another
operation (often the naive path's half-gigabyte of temporaries) has just flushed, and a noisy minute
hits all of them alike;
figures are the median and minimum over the rounds. --clock cpu times each call by the process's CPU time
(user + system, every thread) instead of the wall clock: with --threads 1 it is the figure to compare on a
loaded machine, where the wall clock mostly measures the others (the copy is timed the same way, so the
ratios stay comparable); the output then also gives ns per element. Our reference path is slow and timed
--ref-repeat times apart. Results go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

import numpy as np
from _machine import banner, describe


def log(*a):
    print(*a, file=sys.stderr, flush=True)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def rounds(fns: dict, n: int, mode: str = "loops", clock: str = "wall", warmup: int = 2) -> dict:
    """{name: {median_ms, min_ms, runs}} after `warmup` calls each. loops: n calls of one fn in
    a row, then the next (warm caches); a "copy" (the baseline) is timed in a block of n before every
    other fn's block, not only once first (a run on SPR measured the first role's copies at 3.77 ms
    and the later roles' at 2.5-2.8 ms); shuffled: each fn once per round, in a shuffled order.
    clock: wall (perf_counter) or cpu (this process's CPU time, every thread)."""
    now = CLOCKS[clock]
    for _ in range(warmup):
        for f in fns.values():
            f()
    ts = {k: [] for k in fns}

    def one(k):
        t = now()
        fns[k]()
        ts[k].append(now() - t)

    if mode == "loops":
        for k in [k for k in fns if k != "copy"] or list(fns):
            block = (["copy"] if "copy" in fns and k != "copy" else []) + [k]
            log(f"  {' then '.join(block)} x {n}")
            for b in block:
                for _ in range(n):
                    one(b)
    else:
        order = list(fns)
        rng = random.Random(0)
        for i in range(n):
            log(f"  round {i + 1}/{n}")
            rng.shuffle(order)  # no operation always runs right after the same one
            for k in order:
                one(k)
    return {k: {"median_ms": statistics.median(v) * 1e3, "min_ms": min(v) * 1e3, "runs": len(v)} for k, v in ts.items()}


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
    from fp8port.quant import dequantize, get_preset, quantize

    rng = np.random.default_rng(1)
    x = (
        rng.standard_normal((rows, cols))
        * np.exp(rng.standard_normal((rows, cols // 32, 1)) * 3).repeat(32, axis=1).reshape(rows, cols)
    ).astype(np.float32)
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
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument(
        "--mode",
        choices=["loops", "shuffled"],
        default="loops",
        help="loops: each operation --rounds times in a row (warm caches); shuffled: "
        "interleaved rounds (every operation meets a cache another has just used)",
    )
    ap.add_argument("--ref-repeat", type=int, default=2)
    ap.add_argument("--isa", help="ISA tier of the C kernels (scalar, avx2, avx512, neon) or numba; default: the best")
    ap.add_argument(
        "--clock",
        choices=list(CLOCKS),
        default="wall",
        help="wall: elapsed time (the README figures, on a quiet machine); cpu: the process's CPU time "
        "(with --threads 1, the figure to compare on a loaded machine)",
    )
    ap.add_argument("--rows", type=int, default=4096, help="rows of the rows x 7168 input")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    import numba
    import torch

    torch.set_num_threads(a.threads)
    numba.set_num_threads(a.threads)
    from fp8port import cpu
    from fp8port.quant import dequantize, quantize

    with cpu.forced(a.isa) if a.isa else _nothing():
        return run(a, torch, dequantize, quantize)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def run(a, torch, dequantize, quantize):
    log("building input ...")
    x16 = make_input(torch, rows=a.rows)
    res = {
        "shape": list(x16.shape),
        "threads": a.threads,
        "mode": a.mode,
        "clock": a.clock,
        "machine": describe(),
        "preset": "deepseek-v3.1",
        "roles": {},
    }
    with torch.inference_mode():
        # the bf16 tensor in both roles (naive and reference beside the 1x128 one), then as float32
        for key, role, x in (
            ("activation", "activation", x16),
            ("weight", "weight", x16),
            ("activation/float32", "activation", x16.float()),
        ):
            dst = torch.empty_like(x)
            q = quantize(x, "deepseek-v3.1", role=role)
            naive = key == "activation"
            qn, sn = naive_quant(torch, x) if naive else (None, None)
            out_q, out_x = quantize(x, "deepseek-v3.1", role=role), torch.empty_like(x)
            fns = {
                "copy": lambda: dst.copy_(x),
                "quantize/fast": lambda: quantize(x, "deepseek-v3.1", role=role),
                "quantize/fast_out": lambda: quantize(x, "deepseek-v3.1", role=role, out=out_q),
                "dequantize/fast": lambda: dequantize(q),
                "dequantize/fast_out": lambda: dequantize(q, out=out_x),
            }
            if naive:  # the naive path is DeepSeek's 1x128 activation recipe
                fns["quantize/naive_torch"] = lambda: naive_quant(torch, x)
                fns["dequantize/naive_torch"] = lambda: naive_dequant(torch, qn, sn)
            log(f"{key}: {a.rounds} rounds of {', '.join(fns)} ...")
            t = rounds(fns, a.rounds, a.mode, a.clock)
            if naive:
                log("reference quantize / dequantize (slow) ...")
                t.update(
                    rounds(
                        {
                            "quantize/reference": lambda: quantize(x, "deepseek-v3.1", role=role, backend="reference"),
                            "dequantize/reference": lambda: dequantize(q, backend="reference"),
                        },
                        a.ref_repeat,
                        clock=a.clock,
                        warmup=1,
                    )
                )
                t["bit_exact_vs_naive"] = bool(torch.equal(q.codes, qn.view(torch.uint8)))
            c = t["copy"]["median_ms"]
            for op in ("quantize", "dequantize"):
                t[f"{op}/fast_out_over_copy"] = t[f"{op}/fast_out"]["median_ms"] / c
                t[f"{op}/fast_over_copy"] = t[f"{op}/fast"]["median_ms"] / c
                if naive:
                    t[f"{op}/naive_over_fast"] = t[f"{op}/naive_torch"]["median_ms"] / t[f"{op}/fast"]["median_ms"]
                    t[f"{op}/reference_over_fast"] = t[f"{op}/reference"]["median_ms"] / t[f"{op}/fast"]["median_ms"]
            res["roles"][key] = t
        # the MX and NVFP4 presets (weights along the last axis), bf16 input: quantize vs the copy
        dst = torch.empty_like(x16)
        fns = {"copy": lambda: dst.copy_(x16)}
        for p in ("mxfp8", "mxfp4", "nvfp4"):
            fns[p] = lambda p=p: quantize(x16, p)
            if p != "nvfp4":  # NVFP4's per-tensor scale is a number: no out=
                qo = quantize(x16, p)
                fns[p + "/out"] = lambda p=p, qo=qo: quantize(x16, p, out=qo)
        log(f"mx: {a.rounds} rounds of {', '.join(fns)} ...")
        t = rounds(fns, a.rounds, a.mode, a.clock)
        for k in list(t):
            if k != "copy":
                t[f"{k}_over_copy"] = t[k]["median_ms"] / t["copy"]["median_ms"]
        res["mx"] = t
    log("MSE-optimal power of two vs RCEIL / FLOOR (relative MSE, reference path) ...")
    res["mse_rule_relative_mse"] = mse_gain()

    if a.json:
        print(json.dumps(res, indent=1))
        return
    print(banner(res["machine"]))
    n = x16.numel()
    print(
        f"{a.rows}x7168, {a.threads} threads; median / min {a.clock} ms of {a.rounds} calls ({a.mode})"
        + ("; [median ns per element]" if a.clock == "cpu" else "")
    )

    def ns(ms):  # per element, on the CPU clock
        return f"   [{ms * 1e6 / n:.3f} ns/el]" if a.clock == "cpu" else ""

    for key, t in res["roles"].items():
        blocks = "128x128" if key == "weight" else "1x128"
        dtype = "float32" if key.endswith("float32") else "bf16"
        print(f"deepseek-v3.1 {key.split('/')[0]} ({blocks} UE8M0), {dtype} input")
        print(
            f"  copy into preallocated       {t['copy']['median_ms']:8.2f} / {t['copy']['min_ms']:.2f}"
            + ns(t["copy"]["median_ms"])
        )
        for op in ("quantize", "dequantize"):
            for k in ("naive_torch", "reference", "fast", "fast_out"):
                if f"{op}/{k}" in t:
                    v = t[f"{op}/{k}"]
                    print(f"  {op:10s} {k:17s} {v['median_ms']:8.2f} / {v['min_ms']:.2f}" + ns(v["median_ms"]))
            line = (
                f"  {op:10s} fast_out/copy = {t[f'{op}/fast_out_over_copy']:.2f}x   "
                f"fast/copy = {t[f'{op}/fast_over_copy']:.2f}x"
            )
            if f"{op}/naive_over_fast" in t:
                line += (
                    f"   naive/fast = {t[f'{op}/naive_over_fast']:.1f}x"
                    f"   reference/fast = {t[f'{op}/reference_over_fast']:.0f}x"
                )
            print(line)
        if "bit_exact_vs_naive" in t:
            print(f"  fast codes == naive torch codes: {t['bit_exact_vs_naive']}")
    t = res["mx"]
    print("MX / NVFP4 weights (1x32 E8M0 FLOOR; NVFP4 1x16 E4M3 over an fp32 tensor scale), bf16 input")
    print(
        f"  copy into preallocated       {t['copy']['median_ms']:8.2f} / {t['copy']['min_ms']:.2f}"
        + ns(t["copy"]["median_ms"])
    )
    for k in ("mxfp8", "mxfp8/out", "mxfp4", "mxfp4/out", "nvfp4"):
        print(
            f"  quantize {k:20s} {t[k]['median_ms']:8.2f} / {t[k]['min_ms']:.2f}   {t[k + '_over_copy']:.2f}x the copy"
            + ns(t[k]["median_ms"])
        )
    m = res["mse_rule_relative_mse"]
    for p in ("mxfp8", "mxfp4"):
        f, r, o = m[f"{p}/floor"], m[f"{p}/rceil"], m[f"{p}/mse_pow2"]
        print(
            f"  relative MSE ({p} 1x32): floor {f:.3e}  rceil {r:.3e}  mse_pow2 {o:.3e}"
            f"  (gain vs rceil {100 * (1 - o / r):.1f}%, vs floor {100 * (1 - o / f):.1f}%)"
        )


if __name__ == "__main__":
    main()
