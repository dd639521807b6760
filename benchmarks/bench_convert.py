"""Checkpoint conversion throughput and memory: plain copy vs `fp8port convert` vs `fp8port dequant`.

Builds a synthetic sharded BF16 Llama-like checkpoint (4096x4096 attention, 11008x4096 /
4096x11008 MLP, 4096 norms; --size-gb, default 2), then times, --repeat times each:

  copy     shutil.copyfile of every file into a fresh folder, then fsync (fp8port fsyncs too)
  convert  `fp8port convert --preset deepseek-v3.1` in a subprocess
  dequant  `fp8port dequant` of that output back to bf16, in a subprocess

Both ratios are against that copy of the dense BF16 checkpoint: convert reads those bytes (and writes
half as many), dequant writes them (from half as many): "a plain file copy of the same bytes" in issue
20, the larger side of each step. Every timed step starts after os.sync(): none pays for the writeback
of an earlier step or for the discards of the files just deleted (a disk mounted with `discard`).

It prints the median seconds, GB/s over the dense BF16 size (so the ratios are time ratios),
ratios vs the copy, the CPU time (user + system) of each step beside the copy's (the figure to compare on
a loaded machine, where wall times mostly measure the others) and each subprocess's peak RSS. Peak RSS
is that of the largest single process (getrusage semantics): with --workers N the pool's processes add
up to about N times it.
convert and the copy read a warm page cache (the source was just written; nothing here drops caches);
dequant reads convert's output, which fp8port writes past the page cache (O_DIRECT), so from disk, as a
dequant right after any conversion does.

Usage: python benchmarks/bench_convert.py [--size-gb 2] [--shards 8] [--repeat 3] [--workers 1]
                                          [--dir DIR] [--keep] [--json]
Results go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np
from _machine import banner, describe

from fp8port.checkpoint.safetensors_io import Entry, write_file

HIDDEN, INTER = 4096, 11008
LAYER = [
    ("self_attn.q_proj", (HIDDEN, HIDDEN)),
    ("self_attn.k_proj", (HIDDEN, HIDDEN)),
    ("self_attn.v_proj", (HIDDEN, HIDDEN)),
    ("self_attn.o_proj", (HIDDEN, HIDDEN)),
    ("mlp.gate_proj", (INTER, HIDDEN)),
    ("mlp.up_proj", (INTER, HIDDEN)),
    ("mlp.down_proj", (HIDDEN, INTER)),
]
NORMS = ["input_layernorm", "post_attention_layernorm"]
FP8PORT = [sys.executable, "-c", "import sys; from fp8port.cli.main import main; sys.exit(main(sys.argv[1:]))"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def layer_bytes() -> int:
    return sum(2 * math.prod(s) for _, s in LAYER) + 2 * HIDDEN * len(NORMS)


class _Weights:
    """Random bf16 matrices with a per-128-column-block magnitude spread; one random base per shape,
    scaled per tensor, so that building 2 GB costs seconds rather than a minute of randn."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.base: dict[tuple, np.ndarray] = {}

    def __call__(self, shape, k):
        if shape not in self.base:
            x = self.rng.standard_normal(shape, dtype=np.float32) * 0.02
            spread = np.exp(self.rng.standard_normal((shape[0], shape[1] // 128, 1), dtype=np.float32))
            self.base[shape] = (x.reshape(shape[0], -1, 128) * spread).reshape(shape)
        return (self.base[shape] * np.float32(1 + 0.01 * k)).astype(ml_dtypes.bfloat16)


def build(root: Path, size_gb: float, shards: int) -> int:
    """Write the synthetic checkpoint; returns its tensor bytes."""
    layers = max(1, math.ceil(size_gb * 1e9 / layer_bytes()))
    gen = _Weights()
    tensors = []  # (name, shape, produce)
    for i in range(layers):
        for j, (mod, shape) in enumerate(LAYER):
            tensors.append((f"model.layers.{i}.{mod}.weight", shape, lambda s=shape, k=i * 10 + j: gen(s, k)))
        for norm in NORMS:
            tensors.append((f"model.layers.{i}.{norm}.weight", (HIDDEN,), lambda: np.ones(HIDDEN, ml_dtypes.bfloat16)))
    tensors.append(("model.norm.weight", (HIDDEN,), lambda: np.ones(HIDDEN, ml_dtypes.bfloat16)))
    total = sum(2 * math.prod(s) for _, s, _ in tensors)
    per = total / shards
    groups, acc = [[] for _ in range(shards)], 0
    for t in tensors:  # contiguous runs of roughly total/shards bytes
        groups[min(shards - 1, int(acc // per))].append(t)
        acc += 2 * math.prod(t[1])
    groups = [g for g in groups if g]
    names = [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    root.mkdir(parents=True)
    weight_map = {}
    for name, group in zip(names, groups):
        log(f"  writing {name} ({len(group)} tensors)")
        write_file(root / name, [Entry(n, "BF16", s, p) for n, s, p in group], {"format": "pt"})
        weight_map.update({n: name for n, _, _ in group})
    (root / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    (root / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "hidden_size": HIDDEN,
                "intermediate_size": INTER,
                "num_hidden_layers": layers,
                "num_attention_heads": 32,
                "num_key_value_heads": 32,
                "torch_dtype": "bfloat16",
            }
        )
    )
    return total


def copy_folder(src: Path, dst: Path) -> None:
    dst.mkdir()
    for f in sorted(src.iterdir()):
        shutil.copyfile(f, dst / f.name)
        with open(dst / f.name, "rb+") as fh:
            os.fsync(fh.fileno())


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_measured(cmd: list[str]) -> tuple[float, float, float]:
    """(seconds, peak RSS in MB, user + system CPU seconds) of a subprocess. /usr/bin/time -v where
    present; otherwise a fresh Python parent whose RUSAGE_CHILDREN holds only this child (ours
    accumulates every child)."""
    if Path("/usr/bin/time").exists():
        wrapped = ["/usr/bin/time", "-v", *cmd]
    else:
        wrapped = [
            sys.executable,
            "-c",
            "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]).returncode;"
            " u = resource.getrusage(resource.RUSAGE_CHILDREN); print('Maximum resident set size (kbytes):',"
            " u.ru_maxrss, file=sys.stderr); print('User time (seconds):', u.ru_utime, file=sys.stderr);"
            " print('System time (seconds):', u.ru_stime, file=sys.stderr); sys.exit(r)",
            *cmd,
        ]
    t = time.perf_counter()
    proc = subprocess.run(wrapped, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    secs = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:])} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")

    def last(label):
        v = [line.rsplit(":", 1)[1] for line in proc.stderr.splitlines() if label in line]
        return float(v[-1]) if v else float("nan")

    cpu = last("User time (seconds)") + last("System time (seconds)")
    return secs, last("Maximum resident set size") / 1024, cpu


def folder_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.iterdir() if f.suffix == ".safetensors")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gb", type=float, default=2.0, help="dense BF16 size of the synthetic checkpoint")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="passed to fp8port convert/dequant")
    ap.add_argument("--dir", help="work folder (default: a fresh temporary folder, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench_convert-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        src = work / "src"
        if src.exists():
            shutil.rmtree(src)
        log(f"building a {args.size_gb:g} GB synthetic BF16 checkpoint in {src} ...")
        t = time.perf_counter()
        dense = build(src, args.size_gb, args.shards)
        log(f"  {dense / 1e9:.2f} GB in {time.perf_counter() - t:.1f} s")
        common = ["-q", "--workers", str(args.workers)]
        results = {"copy": [], "convert": [], "dequant": []}
        rss = {"convert": [], "dequant": []}
        cpu = {"copy": [], "convert": [], "dequant": []}
        sizes = {}
        for r in range(args.repeat):
            for d in ("copy", "fp8", "back"):
                shutil.rmtree(work / d, ignore_errors=True)
            os.sync()
            t, c = time.perf_counter(), cpu_seconds()
            copy_folder(src, work / "copy")
            results["copy"].append(time.perf_counter() - t)
            cpu["copy"].append(cpu_seconds() - c)
            shutil.rmtree(work / "copy")
            for step, cmd in (
                ("convert", ["convert", str(src), str(work / "fp8"), "--preset", "deepseek-v3.1"]),
                ("dequant", ["dequant", str(work / "fp8"), str(work / "back"), "--dtype", "bf16"]),
            ):
                os.sync()
                s, m, c = run_measured([*FP8PORT, *cmd, *common])
                results[step].append(s)
                rss[step].append(m)
                cpu[step].append(c)
            sizes = {"fp8_bytes": folder_bytes(work / "fp8"), "dequant_bytes": folder_bytes(work / "back")}
            log(
                f"run {r + 1}/{args.repeat}: copy {results['copy'][-1]:.2f} s, convert {results['convert'][-1]:.2f} s "
                f"({rss['convert'][-1]:.0f} MB), dequant {results['dequant'][-1]:.2f} s ({rss['dequant'][-1]:.0f} MB)"
            )
            for d in ("fp8", "back"):
                shutil.rmtree(work / d)
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in results.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    report = {
        "environment": {
            **describe(),
            "python": platform.python_version(),
            "repeat": args.repeat,
            "workers": args.workers,
            "shards": args.shards,
            "dense_bytes": dense,
            **sizes,
            "page_cache": "warm",
        },
        "results": {
            k: {
                "median_s": round(med[k], 3),
                "min_s": round(min(results[k]), 3),
                "gb_per_s": round(dense / 1e9 / med[k], 3),
                "vs_copy": round(med[k] / med["copy"], 2),
                "cpu_median_s": round(cmed[k], 3),
                "cpu_vs_copy": round(cmed[k] / cmed["copy"], 2),
                **({"peak_rss_mb": round(max(rss[k]), 1)} if k in rss else {}),
            }
            for k in results
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(banner(report["environment"]))
    print(
        f"{dense / 1e9:.2f} GB BF16 in {args.shards} shards -> {sizes['fp8_bytes'] / 1e9:.2f} GB FP8; "
        f"median of {args.repeat}, workers={args.workers}, {os.cpu_count()} CPUs, warm page cache"
    )
    print(
        f"{'step':8s} {'median s':>9s} {'GB/s':>7s} {'x copy':>7s} {'CPU s':>7s} {'CPU x copy':>10s} "
        f"{'peak RSS MB':>12s}"
    )
    for k, v in report["results"].items():
        print(
            f"{k:8s} {v['median_s']:9.2f} {v['gb_per_s']:7.3f} {v['vs_copy']:7.2f} {v['cpu_median_s']:7.2f} "
            f"{v['cpu_vs_copy']:10.2f} {v.get('peak_rss_mb', float('nan')):12.0f}"
        )
    print(
        "GB/s are over the dense BF16 size for every step (so they compare as time ratios); CPU s: user + system "
        "seconds (a subprocess's include its start, about 0.2 s)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
