"""`fp8port convert | dequant | rescale | inspect | diff`: checkpoints on disk.

Parsing and printing only: the work is fp8port.checkpoint's. Progress goes to stderr,
results to stdout, `--json` for machines.
"""

from __future__ import annotations

import os
import re
import sys
import time
from contextlib import contextmanager

from ..checkpoint import convert as cv
from ..checkpoint.plan import SUMMARY, Options, make_plan
from ..errors import UnknownNameError
from .output import print_json, print_table

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1e3,
    "kb": 1e3,
    "m": 1e6,
    "mb": 1e6,
    "g": 1e9,
    "gb": 1e9,
    "t": 1e12,
    "tb": 1e12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(text: str) -> int:
    m = _SIZE.match(text.strip())
    if not m or m.group(2).lower() not in _UNITS:
        raise UnknownNameError("size", text, ["a number with an optional unit: 500MB, 5GB, 2GiB"])
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _common(p, out=True):
    p.add_argument("src", metavar="SRC", help="a Hugging Face model folder (or one .safetensors file)")
    if out:
        p.add_argument(
            "dst",
            metavar="DST",
            help="the output folder (created; must be empty, or --overwrite); with --layout gguf one .gguf file",
        )
        p.add_argument("--shard-size", default="5GB", help="largest output shard (default 5GB)")
        p.add_argument("--workers", type=int, default=1, help="shards written in parallel processes")
        p.add_argument(
            "--ray",
            nargs="?",
            const="local",
            metavar="ADDRESS",
            help="write shards as Ray tasks (replaces --workers): a local cluster, or the one at "
            "ADDRESS ('auto', host:port); SRC and DST must be on storage every node sees",
        )
        p.add_argument("--resume", action="store_true", help="continue an interrupted run with the same options")
        p.add_argument("--overwrite", action="store_true", help="replace a non-empty DST when done")
        p.add_argument("--dry-run", action="store_true", help="print the plan and write nothing")
        p.add_argument("--verify", action="store_true", help="reload every written tensor and check it")
        p.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
        p.add_argument("-q", "--quiet", action="store_true", help="no per-tensor progress on stderr")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="quantize a checkpoint, or move one to another layout (streaming, CPU)",
        description="Quantize every 2-D linear weight of a dense safetensors checkpoint, or "
        "re-lay out / requantize a quantized one into any layout fp8port writes.",
    )
    _common(p)
    p.add_argument(
        "--preset",
        help="deepseek-v3.1, deepseek-v3, mxfp8, mxfp4, nvfp4, hif8, ...; with --layout "
        "ascend an AscendV1 type (msModelSlim's bytes): W8A8_MXFP8, W4A8_MXFP, W4A4_MXFP4, W8A8_DYNAMIC, "
        "W8A16, W4A8_DYNAMIC, W8A8, or TYPE:PRESET (W8A8_MXFP8:mxfp8); deepseek-v4: routed experts MXFP4, "
        "the rest FP8 (DeepSeek-V4 layout). Without it "
        "a quantized SRC keeps its scheme: codes kept, scales moved (lossless where the formats allow)",
    )
    p.add_argument(
        "--layout",
        help="deepseek (FP8 presets' default) | compressed-tensors | fp8port (other presets' "
        "default) | deepseek-v4 | gpt-oss (MoE experts in MXFP4) | ascend (msModelSlim AscendV1) | gguf (DST "
        "is one .gguf file) | dense; without --preset: SRC's layout",
    )
    p.add_argument("--type", help="with --layout gguf: f32 | f16 | bf16 | q8_0 | mxfp4 | nvfp4")
    p.add_argument(
        "--exact",
        action="store_true",
        help="refuse any step that could change a value (quantizing, "
        "requantizing, a dtype that cannot hold every value): typed error, nothing written",
    )
    p.add_argument("--block", help="re-block every quantized weight, e.g. 64x64 (exact from 128x128), 1x32")
    p.add_argument("--activation-scales", help="ascend W8A8 static: JSON {module: {input_scale, input_offset}}")
    p.add_argument("--scale-dtype", help="f32 | bf16 | e8m0 (one-byte scales, DeepSeek-V4 style)")
    p.add_argument("--include", action="append", default=[], help="glob of tensors to quantize anyway")
    p.add_argument("--exclude", action="append", default=[], help="glob of tensors to keep dense")
    p.add_argument("--nonfinite", default="error", help="error | keep | zero: NaN/Inf weights")
    p.set_defaults(run=run, mode="convert")

    p = subparsers.add_parser(
        "dequant",
        help="dequantize a block-scaled checkpoint back to dense",
        description="Any block-scaled checkpoint fp8port reads, back to a dense one.",
    )
    _common(p)
    p.add_argument("--dtype", default="bf16", help="bf16 (default) | fp16 | fp32")
    p.set_defaults(run=run, mode="dequant")

    p = subparsers.add_parser(
        "rescale",
        help="fp32 block scales -> UE8M0, UE8M0 128x128 -> MXFP8 1x32, or what an engine holds after loading",
        description="Move an FP8 block checkpoint to another scale format, or write it as an "
        "engine transforms it at load (--to vllm-sm100, ...).",
    )
    _common(p)
    p.add_argument(
        "--to",
        required=True,
        help="ue8m0 | mxfp8 | an engine: vllm-sm100, sglang-sm100, vllm-ascend-950, "
        "vllm-ascend-a2, transformers-cpu, gguf-q8_0",
    )
    p.add_argument("--scale-dtype", help="with --to ue8m0: f32 (default) | e8m0")
    p.set_defaults(run=run, mode="rescale")

    p = subparsers.add_parser("inspect", help="what a checkpoint is, and who will misread it")
    _common(p, out=False)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_inspect)

    p = subparsers.add_parser("diff", help="compare two checkpoints tensor by tensor")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_diff)


def _options(args) -> Options:
    return Options(
        mode=args.mode,
        preset=getattr(args, "preset", None),
        layout=getattr(args, "layout", None),
        scale_dtype=getattr(args, "scale_dtype", None),
        block=getattr(args, "block", None),
        dtype=getattr(args, "dtype", "bf16"),
        to=getattr(args, "to", None),
        include=tuple(getattr(args, "include", ())),
        exclude=tuple(getattr(args, "exclude", ())),
        shard_size=parse_size(args.shard_size),
        nonfinite=getattr(args, "nonfinite", "error"),
        activation_scales=getattr(args, "activation_scales", None),
        type=getattr(args, "type", None),
        exact=getattr(args, "exact", False),
    )


# A conversion hashes its output on a thread of its own: the kernels get one core less, and libgomp's
# threads sleep between calls instead of spinning (by default they spin for a while after each parallel
# region, on the core the hashing thread needs: 0.2-0.3 CPU s of convert's and dequant's 1.5-2).
# OMP_WAIT_POLICY is read when the kernels' library loads, so it is set before the first kernel call;
# a value the user set is kept. See docs/conversion-io.md.
_CONVERSION_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


@contextmanager
def _conversion_env():
    from ..cpu import capped_threads

    added = [k for k in _CONVERSION_ENV if k not in os.environ]
    os.environ.update({k: _CONVERSION_ENV[k] for k in added})
    try:
        with capped_threads((os.cpu_count() or 1) - 1):
            yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def run(args) -> int:
    opts = _options(args)
    if args.dry_run:
        plan = make_plan(args.src, opts)
        if args.json:
            print_json(plan.to_json())
        else:
            for name, idx in zip(plan.shard_names, plan.shards):
                print(name)
                for i in idx:
                    j = plan.jobs[i]
                    outs = ", ".join(f"{n} {d}{list(s)}" for n, d, s in j.outputs)
                    print(f"  {j.action.value:16s} {j.source} -> {outs}")
            for note in plan.notes:
                print(f"note: {note}")
        return 0
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    from ..distributed import executor_from_option  # here: a conversion's start-up counts in its time

    with _conversion_env(), executor_from_option(args.ray, log=log) as executor:
        t0 = time.perf_counter()
        res = cv.run(
            args.src,
            args.dst,
            opts,
            resume=args.resume,
            overwrite=args.overwrite,
            workers=args.workers,
            executor=executor,
            verify=args.verify,
            progress=None if args.quiet else cv._print_progress,
        )
        secs = time.perf_counter() - t0
    s = res.summary
    if args.json:
        print_json({**s, "seconds": round(secs, 3), "resumed_shards": res.resumed_shards, "dst": str(res.dst)})
        return 0
    counts = ", ".join(f"{v} {k}" for k, v in s["counts"].items() if v)
    print(
        f"{res.dst}: {s['layout_out']} layout, {counts}; {s['bytes_written'] / 1e6:.1f} MB in "
        f"{len(s['files'])} file(s), {secs:.1f} s"
        + (f" ({res.resumed_shards} shard(s) resumed)" if res.resumed_shards else "")
    )
    sqnr = sorted(t["sqnr_db"] for t in s["tensors"].values() if t.get("sqnr_db") is not None)
    if sqnr:
        where = "--json" if res.plan.writer.single_file else SUMMARY  # a one-file output has no summary file
        print(
            f"sqnr vs source: min {sqnr[0]:.2f} dB, median {sqnr[len(sqnr) // 2]:.2f} dB over {len(sqnr)} "
            f"tensors (per tensor in {where})"
        )
    if "verify" in s:
        v = s["verify"]
        exact = sum(t["exact"] for t in v["tensors"].values())
        print(f"verify: {'ok' if v['ok'] else 'FAILED'}; {exact} of {len(v['tensors'])} converted tensors exact")
    return 0


def run_inspect(args) -> int:
    from ..checkpoint.inspect import inspect

    info = inspect(args.src)
    if args.json:
        print_json(info)
        return 0
    print(
        f"{info['path']}: {info['layout']} layout ({info['detected_by']}), {info['tensors']} tensors in "
        f"{len(info['files'])} file(s), {info['parameters']:,} parameters, {info['bytes'] / 1e6:.1f} MB"
    )
    print_table(
        ["dtype", "tensors", "MB"],
        [[d, str(v["tensors"]), f"{v['bytes'] / 1e6:.1f}"] for d, v in info["dtypes"].items()],
        right={1, 2},
    )
    if info["quantized"]:
        print(
            f"preset: {info['preset']}; element {info['element']}, {info['block']} blocks, scales "
            f"{'/'.join(info['scale_storage'])}, all powers of two: {info['scales_all_powers_of_two']}"
        )
        print(
            f"quantized weights: {info['quantized']}; kept dense: {info['dense_tensors']} "
            f"(e.g. {', '.join(info['dense_examples'][:4])})"
        )
    for g in info.get("groups", []):
        print(
            f"  {g['weights']} x {g['kind']}: {g['block']} blocks, {g['scale_storage']} scales ({g['scale_rule']} "
            f"rule), e.g. {g['examples'][0]}"
        )
    for loader, note in info["loaders"].items():
        print(f"loaded by {loader}: {note}")
    for p in info.get("pitfalls", []):
        print(f"pitfall: {p}")
    for name, v in info["engines"].items():
        what = ", ".join(f"{n} {a}" for a, n in v["counts"].items())
        verdict = (
            v["first_failure"]
            if not v["loads"]
            else "transforms the weights when loading"
            if v["transforms"]
            else "runs the weights as stored"
        )
        print(f"{name}: {verdict} ({what})")
    for w in info["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def run_diff(args) -> int:
    from ..checkpoint.diff import diff

    d = diff(args.a, args.b)
    if args.json:
        print_json(d)
        return 0 if d["identical"] else 1
    rows = [
        [
            r["name"],
            r["status"],
            str(r.get("bytes_equal", "")),
            f"{r.get('max_abs_error', 0):.3g}",
            "" if r.get("sqnr_db") is None else f"{r['sqnr_db']:.2f}",
        ]
        for r in d["tensors"]
    ]
    print_table(["tensor", "status", "bytes equal", "max |a-b|", "SQNR dB"], rows, right={3, 4})
    for n in d["only_in_a"]:
        print(f"only in A: {n}")
    for n in d["only_in_b"]:
        print(f"only in B: {n}")
    print("identical" if d["identical"] else "different")
    return 0 if d["identical"] else 1
