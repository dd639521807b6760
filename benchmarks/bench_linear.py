"""Linear layers at decode (M = 1, 8) and prefill (M = 512) shapes: dense fp32 / bf16 nn.Linear,
our FP8Linear weight-only on the fused kernels (deepseek-v3.1 FP8, MXFP4, NVFP4; bf16 and fp32
activations), the same layer's dequantize-then-matmul fallback, W8A8 and the naive dequantize-then-matmul,
in one run; median and min of --repeat samples, ratios against fp32 and bf16 nn.Linear, and per shape the
best fused layer against the faster dense one beside the issue's target.

    python benchmarks/bench_linear.py [--repeat 7] [--json] [--cpu-time] [--quick] [--shape NAME] [--m 1,8]
                                      [--decode-like [MB]]

--cpu-time: one thread everywhere, each call's CPU time of that thread (steadier on a shared machine
than wall clock); --quick: SmolLM2's gate/up shape only, M = 1 and 8 (a smoke run); --shape: the shapes
whose name contains NAME; --m: these row counts. The first line after the banner is the empty-call
floor: a 16x64 FP8Linear at M = 1 (bf16), whose kernel does almost nothing (Python, dispatch, output).

--decode-like: each call goes to the next of enough distinct copies of the layer that their dense bf16
weights fill MB (default 256, about SmolLM2-135M's whole bf16 model), as a decode step walks every layer
once per token; a layer is then read from memory, not from the cache its previous call left it in. Without
it every sample calls one layer again and again, so layers smaller than the L2 / L3 cache run from cache:
a measure of compute, not of the memory traffic that decode is bound by. Only the dense and fused rows run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time

import torch
from _machine import banner, describe
from torch import nn

from fp8port.nn import FP8Linear, fused

SHAPES = [
    ("smollm2 q/o_proj", 576, 576),
    ("smollm2 gate/up", 1536, 576),
    ("smollm2 down", 576, 1536),
    ("7168->2048", 2048, 7168),
]
MS = (1, 8, 512)
FUSED = ("deepseek-v3.1", "mxfp4", "nvfp4")
TARGET = {1: 2.0, 8: 1.5, 512: 1 / 1.1}  # fused vs the faster dense layer (issue 21); 4-bit at M = 1: 3x
_clock = time.perf_counter


def timeit(fn, repeat):
    fn()
    ts = []
    for _ in range(repeat):
        n, t0 = 0, _clock()
        while True:  # loop each sample to >= 20 ms so tiny calls are measurable
            fn()
            n += 1
            el = _clock() - t0
            if el > 0.02:
                break
        ts.append(el / n)
    return statistics.median(ts) * 1e3, min(ts) * 1e3


def rotating(make, copies: int):
    """A call that goes to the next of `copies` objects made by make() each time (decode-like runs)."""
    calls = [make() for _ in range(copies)]
    for call in calls:  # first calls (a layer's plan, torch's dispatch caches) stay out of the timing
        call()
    it = itertools.cycle(calls)
    return lambda: next(it)()


def target(name: str, m: int) -> float:
    return 3.0 if m == 1 and "fp4" in name else TARGET[m]


def _dense_copy(dense: nn.Linear, dtype) -> nn.Linear:
    out = nn.Linear(dense.in_features, dense.out_features, bias=False).to(dtype)
    out.weight.copy_(dense.weight)
    return out


def _bound(layer, x):
    return lambda: layer(x)


def fallback(layer: FP8Linear, x):
    with fused.disabled():
        return layer(x)


def naive(lin8: FP8Linear, x):
    # what a user writes without fp8port: decode with torch, expand the scale grid, matmul
    w = lin8.codes.view(torch.float8_e4m3fn).float()
    s = lin8.scale_fp32.repeat_interleave(128, 0)[: w.shape[0]].repeat_interleave(128, 1)[:, : w.shape[1]]
    return x @ (w * s).T


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cpu-time", action="store_true", help="one thread; per-call CPU time of that thread")
    ap.add_argument("--quick", action="store_true", help="one shape, M = 1 and 8")
    ap.add_argument("--shape", default="", help="only the shapes whose name contains this")
    ap.add_argument("--m", default=None, help="row counts, comma-separated (default 1,8,512)")
    ap.add_argument(
        "--decode-like",
        type=float,
        nargs="?",
        const=256.0,
        default=0.0,
        metavar="MB",
        help="cycle through distinct copies of each layer whose bf16 weights fill MB (default 256)",
    )
    args = ap.parse_args(argv)
    shapes = [sh for sh in (SHAPES[1:2] if args.quick else SHAPES) if args.shape in sh[0]]
    ms = MS[:2] if args.quick else MS
    if args.m:
        ms = tuple(int(v) for v in args.m.split(","))
    global _clock
    if args.cpu_time:
        import numba

        torch.set_num_threads(1)
        numba.set_num_threads(1)  # the C kernels take Numba's thread count (fp8port.cpu.threads)
        _clock = time.thread_time
    torch.manual_seed(0)
    rows, best = [], []
    with torch.inference_mode():
        tiny, xt = FP8Linear.from_linear(nn.Linear(64, 16, bias=False), "deepseek-v3.1"), torch.randn(1, 64).bfloat16()
        floor_us = round(timeit(lambda: tiny(xt), args.repeat)[0] * 1e3, 2)
        for label, n, k in shapes:
            dense = nn.Linear(k, n, bias=False)
            copies = max(1, round(args.decode_like * 2**20 / (n * k * 2))) if args.decode_like else 1
            dense_bf = _dense_copy(dense, torch.bfloat16)
            layers = {p: FP8Linear.from_linear(dense, p) for p in FUSED}
            w8 = layers["deepseek-v3.1"]
            a8 = FP8Linear.from_linear(dense, "deepseek-v3.1", mode="w8a8")
            for m in ms:
                print(f"{label} M={m} ...", file=sys.stderr)
                x = torch.randn(m, k)
                xb = x.bfloat16()
                if copies > 1:
                    impl = {
                        "fp32 nn.Linear": rotating(lambda: _bound(_dense_copy(dense, torch.float32), x), copies),
                        "bf16 nn.Linear": rotating(lambda: _bound(_dense_copy(dense, torch.bfloat16), xb), copies),
                    }
                    for p in FUSED:
                        for tag, xin in (("bf16", xb), ("fp32", x)):
                            impl[f"{p} fused ({tag})"] = rotating(
                                lambda p=p, xin=xin: _bound(FP8Linear.from_linear(dense, p), xin), copies
                            )
                else:
                    impl = {"fp32 nn.Linear": lambda: dense(x), "bf16 nn.Linear": lambda: dense_bf(xb)}
                    for p, layer in layers.items():
                        impl[f"{p} fused (bf16)"] = lambda layer=layer: layer(xb)
                        impl[f"{p} fused (fp32)"] = lambda layer=layer: layer(x)
                    impl["deepseek-v3.1 dequant path (bf16)"] = lambda: fallback(w8, xb)
                    impl["deepseek-v3.1 w8a8"] = lambda: a8(x)
                    impl["naive dequant+matmul"] = lambda: naive(w8, x)
                t = {name: timeit(fn, args.repeat) for name, fn in impl.items()}
                base32, base16 = t["fp32 nn.Linear"][0], t["bf16 nn.Linear"][0]
                for name, (med, mn) in t.items():
                    rows.append(
                        {
                            "layer": label,
                            "N": n,
                            "K": k,
                            "M": m,
                            "impl": name,
                            "median_ms": round(med, 4),
                            "min_ms": round(mn, 4),
                            "vs_fp32": round(med / base32, 2),
                            "vs_bf16": round(med / base16, 2),
                        }
                    )
                for p in FUSED:
                    name = min((f"{p} fused (bf16)", f"{p} fused (fp32)"), key=lambda i: t[i][0])
                    best.append(
                        {
                            "layer": label,
                            "M": m,
                            "impl": name,
                            "speedup": round(min(base32, base16) / t[name][0], 2),
                            "target": round(target(name, m), 2),
                        }
                    )
            mem = {"bf16_bytes": n * k * 2, "fp8_resident_bytes": w8.resident_bytes()}
            rows.append({"layer": label, "copies": copies, "memory": mem})
    info = {
        **describe(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "repeat": args.repeat,
        "clock": "thread CPU time" if args.cpu_time else "wall",
        "empty_call_floor_us": floor_us,
        "decode_like_mb": args.decode_like,
    }
    if args.json:
        print(json.dumps({"info": info, "rows": rows, "best": best}, indent=1))
        return 0
    print(banner(info))
    print(f"empty-call floor (16x64 FP8Linear, M=1, bf16): {floor_us} us")
    if args.decode_like:
        print(f"decode-like: each call goes to the next of layer copies filling {args.decode_like:g} MB of bf16")
    print(f"linear layers; median ms ({info['clock']}; ratio to fp32 / bf16 nn.Linear)")
    for r in rows:
        if "memory" in r:
            mem = r["memory"]
            print(
                f"  {r['layer']}: resident {mem['fp8_resident_bytes']:,} bytes vs bf16 {mem['bf16_bytes']:,} "
                f"({mem['fp8_resident_bytes'] / mem['bf16_bytes']:.2f}x)"
                + (f"; {r['copies']} copies per implementation" if r["copies"] > 1 else "")
            )
            continue
        print(
            f"{r['layer']:18s} M={r['M']:<4d} {r['impl']:34s} {r['median_ms']:9.3f}  x{r['vs_fp32']:<6} x{r['vs_bf16']}"
        )
    print("fused vs the faster dense nn.Linear (speed-up; target)")
    for b in best:
        print(
            f"{b['layer']:18s} M={b['M']:<4d} {b['impl']:34s} {b['speedup']:6.2f}x  (>= {b['target']}x)"
            f"{'' if b['speedup'] >= b['target'] else '  below target'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
