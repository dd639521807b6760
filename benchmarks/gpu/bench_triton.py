"""One prepared run of the Triton kernels on a CUDA GPU: correctness on the device, then timings.

    python benchmarks/gpu/bench_triton.py            # human-readable table
    python benchmarks/gpu/bench_triton.py --json     # one JSON object on stdout (progress on stderr)
    python benchmarks/gpu/bench_triton.py --quick    # fewer GEMM shapes (fits a short device lease)

1. correctness: codes / scales of the Triton quantize against fp8port's NumPy reference (and the
   bit-exact Numba kernels on the largest shape), dequantize bit for bit, and the GEMM's
   DeepGEMM calc_diff against an fp32 GEMM of the unquantized operands (< 1e-3);
2. quantize / dequantize bandwidth (bytes read + written per second) beside a device-to-device
   copy of the same bytes (target: quantize >= 85% of copy bandwidth);
3. the block-scaled GEMM at M = 4096 on DeepSeek-V3 shapes (deepseek-ue8m0.md §2.2) beside
   torch._scaled_mm (per-tensor FP8) and bf16 torch.matmul, in TFLOPS (target >= 1000).
Exits 2 at once without a CUDA device; a watchdog (--timeout) ends a run that stalls.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

# DeepSeek-V3 (N, K) at M = 4096 (deepseek-ue8m0.md §2.2)
GEMM_SHAPES = [
    ("q_a_proj", 1536, 7168),
    ("kv_a_proj", 576, 7168),
    ("q_a+kv_a", 2112, 7168),
    ("q_b_proj", 24576, 1536),
    ("kv_b_proj", 32768, 512),
    ("o_proj", 7168, 16384),
    ("dense gate/up", 18432, 7168),
    ("dense down", 7168, 18432),
    ("expert gate+up", 4096, 7168),
    ("expert gate/up", 2048, 7168),
    ("expert down", 7168, 2048),
]
QUICK = {"q_a+kv_a", "q_b_proj", "o_proj", "dense gate/up", "expert down"}
M = 4096


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def fail(msg: str, code: int = 2):
    print(f"bench_triton: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def setup():
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        fail("TRITON_INTERPRET is set: unset it, this script times compiled kernels")
    try:
        import torch
    except ImportError:
        fail("torch is not installed")
    if not torch.cuda.is_available():
        fail("no CUDA device visible (torch.cuda.is_available() is False); run this on a GPU machine")
    try:
        import triton  # noqa: F401
    except ImportError:
        fail("triton is not installed: pip install triton==3.9.0")
    return torch


def timed(torch, fn, iters: int, warmup: int = 3) -> float:
    """Median seconds per call, CUDA events around each call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    times.sort()
    return times[len(times) // 2]


def calc_diff(x, y) -> float:
    x, y = x.double(), y.double()
    return float(1 - 2 * (x * y).sum() / (x * x + y * y).sum())


def correctness(torch):
    import fp8port
    from fp8port.kernels import dispatch

    out = []
    cases = [
        ("deepseek-v3.1", "activation", (130, 200), "reference"),
        ("deepseek-v3.1", "weight", (576, 7168), "reference"),
        ("mxfp8", "activation", (256, 7168), "reference"),
        ("deepseek-v3.1", "activation", (4096, 7168), "fast"),
        ("mxfp8", "weight", (4096, 7168), "fast"),
    ]
    g = torch.Generator().manual_seed(0)
    for preset, role, shape, backend in cases:
        x = torch.randn(shape, generator=g) * torch.exp2(torch.randint(-10, 10, shape, generator=g).float())
        x = x.bfloat16()
        ref = fp8port.quantize(x, preset, role=role, backend=backend)
        q = dispatch.quantize(x.cuda(), preset, role=role)
        codes_ok = torch.equal(q.codes.cpu(), ref.codes)
        scales_ok = torch.equal(q.scale_fp32.cpu().view(torch.int32), ref.scale_fp32.view(torch.int32))
        deq = dispatch.dequantize(q, "bfloat16").cpu()
        want = fp8port.dequantize(ref, "bfloat16", backend=backend)
        deq_ok = torch.equal(deq.view(torch.int16), want.view(torch.int16))
        out.append(
            {
                "check": f"quantize {preset}/{role} {shape[0]}x{shape[1]} vs {backend}",
                "codes": codes_ok,
                "scales": scales_ok,
                "dequantize": deq_ok,
                "ok": codes_ok and scales_ok and deq_ok,
            }
        )
        log(out[-1])
    for n, k in ((576, 7168), (7168, 2048)):
        x = torch.randn(M, k, device="cuda")
        w = torch.randn(n, k, device="cuda")
        a = dispatch.quantize(x, "deepseek-v3.1", role="activation")
        b = dispatch.quantize(w, "deepseek-v3.1", role="weight")
        y = dispatch.scaled_matmul(a, b, out_dtype="bfloat16").float()
        d = calc_diff(y, x @ w.T)
        out.append({"check": f"gemm calc_diff {M}x{n}x{k}", "calc_diff": d, "ok": d < 1e-3})
        log(out[-1])
    return out


def quant_bandwidth(torch, iters):
    from fp8port.kernels import dispatch
    from fp8port.quant.presets import get_preset

    rows = []
    for preset, role, shape in (
        ("deepseek-v3.1", "activation", (4096, 7168)),
        ("deepseek-v3.1", "weight", (18432, 7168)),
        ("mxfp8", "activation", (4096, 7168)),
    ):
        x = torch.randn(shape, device="cuda").bfloat16()
        q = dispatch.quantize(x, preset, role=role, nonfinite="propagate")
        e = x.numel()
        scale_bytes = q.scale_fp32.numel() * 4 + (q.scale.numel() if q.scale.element_size() == 1 else 0)
        scheme = get_preset(preset).scheme(role)
        t_q = timed(torch, lambda: dispatch.quantize(x, scheme, role=role, nonfinite="propagate"), iters)
        t_d = timed(torch, lambda: dispatch.dequantize(q, "bfloat16"), iters)
        moved_q = 2 * e + e + scale_bytes  # bf16 in, codes + scales out
        moved_d = e + q.scale_fp32.numel() * 4 + 2 * e
        src = torch.empty(moved_q // 2, dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(src)
        t_c = timed(torch, lambda: dst.copy_(src), iters)  # reads + writes moved_q bytes in all
        copy_gbs = moved_q / t_c / 1e9
        for op, t, moved in (("quantize", t_q, moved_q), ("dequantize", t_d, moved_d)):
            gbs = moved / t / 1e9
            rows.append(
                {
                    "op": op,
                    "scheme": f"{preset}/{role}",
                    "shape": list(shape),
                    "ms": t * 1e3,
                    "GBps": gbs,
                    "copy_GBps": copy_gbs,
                    "pct_of_copy": 100 * gbs / copy_gbs,
                }
            )
            log(rows[-1])
    return rows


def gemm_speed(torch, iters, quick):
    from fp8port.kernels import dispatch

    rows = []
    for name, n, k in GEMM_SHAPES:
        if quick and name not in QUICK:
            continue
        x = torch.randn(M, k, device="cuda")
        w = torch.randn(n, k, device="cuda")
        a = dispatch.quantize(x, "deepseek-v3.1", role="activation")
        b = dispatch.quantize(w, "deepseek-v3.1", role="weight")
        flops = 2 * M * n * k
        t0 = time.time()
        dispatch.scaled_matmul(a, b, out_dtype="bfloat16")  # autotunes this shape
        tune_s = time.time() - t0
        t_tr = timed(torch, lambda: dispatch.scaled_matmul(a, b, out_dtype="bfloat16"), iters)
        xf, wf = x.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
        one = torch.ones((), device="cuda")
        try:
            t_sm = timed(
                torch, lambda: torch._scaled_mm(xf, wf.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16), iters
            )
        except Exception as exc:  # record, do not stop the run
            t_sm, sm_err = None, repr(exc)[:200]
        else:
            sm_err = None
        xb, wb = x.bfloat16(), w.bfloat16()
        t_bf = timed(torch, lambda: torch.matmul(xb, wb.t()), iters)
        moved = M * k + n * k + a.scale_fp32.numel() * 4 + b.scale_fp32.numel() * 4 + 2 * M * n
        row = {
            "layer": name,
            "M": M,
            "N": n,
            "K": k,
            "autotune_s": tune_s,
            "triton_TFLOPS": flops / t_tr / 1e12,
            "triton_GBps": moved / t_tr / 1e9,
            "scaled_mm_TFLOPS": None if t_sm is None else flops / t_sm / 1e12,
            "bf16_matmul_TFLOPS": flops / t_bf / 1e12,
        }
        if sm_err:
            row["scaled_mm_error"] = sm_err
        rows.append(row)
        log(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--quick", action="store_true", help=f"GEMM on {len(QUICK)} of the {len(GEMM_SHAPES)} shapes")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--timeout", type=int, default=540, help="seconds before the watchdog ends the run")
    args = ap.parse_args(argv)
    torch = setup()

    def watchdog(signum, frame):
        fail(f"watchdog: no result after {args.timeout} s", code=3)

    signal.signal(signal.SIGALRM, watchdog)
    signal.alarm(args.timeout)
    import triton

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from _machine import cpu_model  # the host CPU beside the device

    report = {
        "device": torch.cuda.get_device_name(0),
        "host_cpu_model": cpu_model(),
        "torch": torch.__version__,
        "triton": triton.__version__,
    }
    report["correctness"] = correctness(torch)
    report["quant"] = quant_bandwidth(torch, args.iters)
    report["gemm"] = gemm_speed(torch, args.iters, args.quick)
    report["targets"] = {
        "quantize_ge_85pct_copy": all(r["pct_of_copy"] >= 85 for r in report["quant"] if r["op"] == "quantize"),
        "gemm_ge_1000_TFLOPS": bool(report["gemm"]) and min(r["triton_TFLOPS"] for r in report["gemm"]) >= 1000,
        "correct": all(c["ok"] for c in report["correctness"]),
    }
    signal.alarm(0)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        host = f"host CPU {report['host_cpu_model']}"
        print(f"{report['device']} ({host})  torch {report['torch']}  triton {report['triton']}")
        for c in report["correctness"]:
            print(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['check']}")
        print(f"\n{'op':<11}{'scheme':<26}{'shape':<14}{'GB/s':>8}{'copy GB/s':>11}{'% copy':>8}")
        for r in report["quant"]:
            print(
                f"{r['op']:<11}{r['scheme']:<26}{'x'.join(map(str, r['shape'])):<14}{r['GBps']:>8.0f}"
                f"{r['copy_GBps']:>11.0f}{r['pct_of_copy']:>8.1f}"
            )
        print(f"\n{'layer':<16}{'N':>7}{'K':>7}{'triton TFLOPS':>15}{'GB/s':>8}{'_scaled_mm':>12}{'bf16':>8}")
        for r in report["gemm"]:
            sm = "err" if r["scaled_mm_TFLOPS"] is None else f"{r['scaled_mm_TFLOPS']:.0f}"
            print(
                f"{r['layer']:<16}{r['N']:>7}{r['K']:>7}{r['triton_TFLOPS']:>15.0f}{r['triton_GBps']:>8.0f}"
                f"{sm:>12}{r['bf16_matmul_TFLOPS']:>8.0f}"
            )
        print("\ntargets:", report["targets"])
    return 0 if report["targets"]["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
