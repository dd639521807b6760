"""Linear layers at decode (M = 1, 8) and prefill (M = 512) shapes: dense fp32 / bf16 nn.Linear,
our FP8Linear weight-only (bf16 and fp32 compute) and W8A8, and the naive dequantize-then-matmul,
in one run; median and min of --repeat calls, ratios against fp32 and bf16 nn.Linear.

    python benchmarks/bench_linear.py [--repeat 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from torch import nn

from _machine import banner, describe
from fp8port.nn import FP8Linear

SHAPES = [("smollm2 q/o_proj", 576, 576), ("smollm2 gate/up", 1536, 576), ("smollm2 down", 576, 1536),
          ("7168->2048", 2048, 7168)]
MS = (1, 8, 512)


def timeit(fn, repeat):
    fn()
    ts = []
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        while True:  # loop each sample to >= 20 ms so tiny calls are measurable
            fn()
            n += 1
            el = time.perf_counter() - t0
            if el > 0.02:
                break
        ts.append(el / n)
    return statistics.median(ts) * 1e3, min(ts) * 1e3


def naive(lin8: FP8Linear, x):
    # what a user writes without fp8port: decode with torch, expand the scale grid, matmul
    w = lin8.codes.view(torch.float8_e4m3fn).float()
    s = lin8.scale_fp32.repeat_interleave(128, 0)[: w.shape[0]].repeat_interleave(128, 1)[:, : w.shape[1]]
    return x @ (w * s).T


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    with torch.inference_mode():
        for label, n, k in SHAPES:
            dense = nn.Linear(k, n, bias=False)
            dense_bf = nn.Linear(k, n, bias=False).to(torch.bfloat16)
            dense_bf.weight.copy_(dense.weight)
            w8 = FP8Linear.from_linear(dense, "deepseek-v3.1")
            a8 = FP8Linear.from_linear(dense, "deepseek-v3.1", mode="w8a8")
            for m in MS:
                print(f"{label} M={m} ...", file=sys.stderr)
                x = torch.randn(m, k)
                xb = x.bfloat16()
                impl = {
                    "fp32 nn.Linear": lambda: dense(x),
                    "bf16 nn.Linear": lambda: dense_bf(xb),
                    "fp8 weight-only (bf16)": lambda: w8(xb),
                    "fp8 weight-only (fp32)": lambda: w8(x),
                    "fp8 w8a8": lambda: a8(x),
                    "naive dequant+matmul": lambda: naive(w8, x),
                }
                t = {name: timeit(fn, args.repeat) for name, fn in impl.items()}
                base32, base16 = t["fp32 nn.Linear"][0], t["bf16 nn.Linear"][0]
                for name, (med, mn) in t.items():
                    rows.append({"layer": label, "N": n, "K": k, "M": m, "impl": name, "median_ms": round(med, 4),
                                 "min_ms": round(mn, 4), "vs_fp32": round(med / base32, 2),
                                 "vs_bf16": round(med / base16, 2)})
            rows.append({"layer": label, "memory": {"bf16_bytes": n * k * 2, "fp8_resident_bytes": w8.resident_bytes()}})
    info = {**describe(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "repeat": args.repeat}
    if args.json:
        print(json.dumps({"info": info, "rows": rows}, indent=1))
        return 0
    print(banner(info))
    print("linear layers, deepseek-v3.1 weights; median ms (ratio to fp32 / bf16 nn.Linear)")
    for r in rows:
        if "memory" in r:
            mem = r["memory"]
            print(f"  {r['layer']}: resident {mem['fp8_resident_bytes']:,} bytes vs bf16 {mem['bf16_bytes']:,} "
                  f"({mem['fp8_resident_bytes'] / mem['bf16_bytes']:.2f}x)")
            continue
        print(f"{r['layer']:18s} M={r['M']:<4d} {r['impl']:24s} {r['median_ms']:9.3f}  "
              f"x{r['vs_fp32']:<6} x{r['vs_bf16']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
