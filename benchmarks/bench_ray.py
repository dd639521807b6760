"""`fp8port convert` on Ray vs the local path, on the same synthetic checkpoint.

Builds bench_convert's synthetic BF16 Llama-like checkpoint (--size-gb), then runs, --repeat
times each, `fp8port convert --preset deepseek-v3.1 --shard-size S --json` in a subprocess as:

  local-1t   the local path with one Numba thread (NUMBA_NUM_THREADS=1): the per-core throughput
  local      the local path as shipped (one process; Numba uses every core)
  workers    --workers N (N = the CPU count): spawned local processes
  ray        --ray: a local Ray cluster started by the command itself, one CPU per shard task

and prints, per variant, the median wall time of the whole command (interpreter start, for
--ray also the cluster's start and stop) and of the conversion alone (the summary's
"seconds"), GB/s over the dense BF16 size, and ratios to `local`. Every variant's output
must be byte-identical to the first one's, or the benchmark fails.

Usage: python benchmarks/bench_ray.py [--size-gb 1] [--shard-size 64MB] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import banner, describe  # noqa: E402
from bench_convert import FP8PORT, build, log  # noqa: E402


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def convert(src: Path, dst: Path, shard_size: str, extra: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds of the command, seconds of the conversion itself)."""
    cmd = [
        *FP8PORT,
        "convert",
        str(src),
        str(dst),
        "--preset",
        "deepseek-v3.1",
        "--shard-size",
        shard_size,
        "-q",
        "--json",
        *extra,
    ]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:])} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout)["seconds"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--shards", type=int, default=8, help="source shards")
    ap.add_argument("--shard-size", default="64MB", help="output shards: one Ray task each")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cpus = os.cpu_count() or 1
    variants = {
        "local-1t": ([], {"NUMBA_NUM_THREADS": "1"}),
        "local": ([], {}),
        "workers": (["--workers", str(cpus)], {}),
        "ray": (["--ray"], {}),
    }

    work = Path(tempfile.mkdtemp(prefix="bench_ray-"))
    try:
        src = work / "src"
        log(f"building a {args.size_gb:g} GB synthetic BF16 checkpoint ...")
        dense = build(src, args.size_gb, args.shards)
        wall = {k: [] for k in variants}
        engine = {k: [] for k in variants}
        reference, out_shards = None, 0
        for r in range(args.repeat):
            for name, (extra, env) in variants.items():
                dst = work / "out"
                w, e = convert(src, dst, args.shard_size, extra, env)
                d = digest(dst)
                reference = reference or d
                if d != reference:
                    raise RuntimeError(f"{name}: output differs from the first variant's")
                out_shards = len(list(dst.glob("*.safetensors")))
                shutil.rmtree(dst)
                wall[name].append(w)
                engine[name].append(e)
                log(f"run {r + 1}/{args.repeat} {name:8s}: {w:6.2f} s wall, {e:6.2f} s converting")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mw = {k: statistics.median(v) for k, v in wall.items()}
    me = {k: statistics.median(v) for k, v in engine.items()}
    report = {
        "machine": describe(),  # the CPU model and the kernels' ISA tier
        "environment": {
            "python": platform.python_version(),
            "cpus": cpus,
            "dense_bytes": dense,
            "output_shards": out_shards,
            "shard_size": args.shard_size,
            "repeat": args.repeat,
        },
        "results": {
            k: {
                "wall_s": round(mw[k], 3),
                "convert_s": round(me[k], 3),
                "gb_per_s": round(dense / 1e9 / me[k], 3),
                "speedup_wall": round(mw["local"] / mw[k], 2),
                "speedup_convert": round(me["local"] / me[k], 2),
            }
            for k in variants
        },
        "per_core_gb_per_s": round(dense / 1e9 / me["local-1t"], 3),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(banner(report["machine"]))
    print(
        f"{dense / 1e9:.2f} GB BF16 -> {out_shards} FP8 shards; median of {args.repeat}, {cpus} CPUs, "
        "identical bytes in every variant"
    )
    print(f"{'variant':9s} {'wall s':>7s} {'conv s':>7s} {'GB/s':>6s} {'x wall':>7s} {'x conv':>7s}")
    for k, v in report["results"].items():
        print(
            f"{k:9s} {v['wall_s']:7.2f} {v['convert_s']:7.2f} {v['gb_per_s']:6.3f} "
            f"{v['speedup_wall']:7.2f} {v['speedup_convert']:7.2f}"
        )
    print(f"per-core throughput (local, one thread): {report['per_core_gb_per_s']} GB/s of BF16 input")
    print("x: speed-up over `local` (>1 is faster); wall includes interpreter and, for ray, cluster start/stop.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
