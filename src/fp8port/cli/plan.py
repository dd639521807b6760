"""`fp8port plan MODEL --chip NAME`: weight and KV bytes, chips needed, native or emulated, roofline."""

from __future__ import annotations

import argparse

from .. import deploy as planner
from .output import print_json, print_table

HELP = "plan a deployment: memory per preset, chips needed, native vs emulated, prefill/decode roofline"


def _positive(v: str) -> int:
    n = int(v)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return n


def _fraction(v: str) -> float:
    f = float(v)
    if not 0 < f <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {v}")
    return f


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plan", help=HELP, description=HELP)
    p.add_argument(
        "model", help="HF model folder, config.json, or a built-in name: " + ", ".join(planner.builtin_models())
    )
    p.add_argument("--chip", required=True, help="target chip (see `fp8port targets`)")
    p.add_argument(
        "--preset",
        action="append",
        dest="presets",
        metavar="P",
        help=f"bf16 or a quantization preset; repeatable (default: {' '.join(planner.DEFAULT_PRESETS)})",
    )
    p.add_argument("--context", type=_positive, default=4096, help="tokens per sequence (default 4096)")
    p.add_argument("--batch", type=_positive, default=1, help="concurrent sequences (default 1)")
    p.add_argument("--compare", nargs="+", default=[], metavar="CHIP", help="more chips for the comparison table")
    p.add_argument("--usable", type=_fraction, default=0.9, help="usable fraction of chip memory (default 0.9)")
    p.add_argument(
        "--kv-bytes", type=float, default=2, choices=(1, 2), help="bytes per cached value: 2 BF16 (default), 1 FP8"
    )
    p.add_argument("--mtp", action="store_true", help="include the multi-token-prediction layers in memory")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout (exact bytes)")
    p.set_defaults(run=run)


def _gb(n: int) -> str:
    return f"{n / 1e9:,.1f}"


def _rate(est: dict) -> str:
    if est["tokens_per_s"] is None:
        return "?"
    return f"{est['tokens_per_s']:,.0f} ({est['bound']})"


def _per_chip(est: dict) -> str:
    return "?" if est["tokens_per_s"] is None else f"{est['tokens_per_s_per_chip']:,.1f}"


def _peak(e: dict) -> str:
    p = e["peak"]
    if p["value"] is None:
        return "?"
    v = p["value"]
    return f"{int(v) if float(v).is_integer() else v:,} [{p['confidence']}]"


def _chips(e: dict) -> str:
    return "?" if e["min_chips"] is None else str(e["min_chips"])


def _how(e: dict) -> str:
    return f"{e['execution']} ({e['column']})"


def _print(result: dict) -> None:
    m = result["model"]
    kind = f"{'MoE' if m['moe'] else 'dense'}, {m['attention'].upper()} attention"
    print(
        f"model     {m['name']} ({m['model_type']}, {kind}): {m['params']:,} params, "
        f"{m['activated_params']:,} activated per token"
        + (f"; MTP layers included ({m['params_with_mtp']:,})" if result["include_mtp"] else "")
    )
    print(
        f"workload  context {result['context']:,} x batch {result['batch']:,}; KV cache "
        f"{result['kv_bytes_per_value']:g} bytes/value; usable memory {result['usable_fraction']:.0%}"
    )
    main = result["chips"][0]
    dev = f", {main['devices_per_package']} devices per package" if main["devices_per_package"] > 1 else ""
    mem, bw = main["memory"], main["memory_bandwidth"]
    fig = lambda f, u: "?" if f["value"] is None else f"{f['value']:g} {u} [{f['confidence']}]"  # noqa: E731
    print(f"chip      {main['name']} ({main['vendor']}, {main['status']}): {fig(mem, 'GB')}, {fig(bw, 'TB/s')}{dev}")
    for c in result["chips"]:
        if c["ascend_types"]:
            print(
                f"ascend    {c['name']} runs AscendV1 types {', '.join(c['ascend_types'])} "
                "(fp8port convert --layout ascend --preset TYPE)"
            )
    print()
    headers = [
        "preset",
        "weights GB",
        "KV GB",
        "min chips",
        "execution",
        "peak TFLOPS/chip",
        "prefill tok/s (bound)",
        "decode tok/s (bound)",
        "decode tok/s/chip",
    ]
    mine = [e for e in result["results"] if e["chip"] == main["name"]]
    print_table(
        headers,
        [
            [
                e["preset"],
                _gb(e["weights"]["total"]),
                _gb(e["kv_cache"]),
                _chips(e),
                _how(e),
                _peak(e),
                _rate(e["prefill"]),
                _rate(e["decode"]),
                _per_chip(e["decode"]),
            ]
            for e in mine
        ],
        right={1, 2, 3, 5, 6, 7, 8},
    )
    if len(result["chips"]) > 1:
        for preset in result["presets"]:
            print()
            print(f"comparison, preset {preset}")
            rows = [
                [
                    e["chip"],
                    _chips(e),
                    _how(e),
                    _peak(e),
                    _rate(e["prefill"]),
                    _rate(e["decode"]),
                    _per_chip(e["decode"]),
                ]
                for e in result["results"]
                if e["preset"] == preset
            ]
            print_table(
                [
                    "chip",
                    "min chips",
                    "execution",
                    "peak TFLOPS/chip",
                    "prefill tok/s (bound)",
                    "decode tok/s (bound)",
                    "decode tok/s/chip",
                ],
                rows,
                right={1, 3, 4, 5, 6},
            )
    print()
    print("assumptions:")
    for a in result["assumptions"]:
        print(f"  - {a}")


def run(args) -> int:
    result = planner.plan(
        args.model,
        args.chip,
        presets=args.presets or planner.DEFAULT_PRESETS,
        context=args.context,
        batch=args.batch,
        compare=args.compare,
        usable_fraction=args.usable,
        kv_bytes=args.kv_bytes,
        include_mtp=args.mtp,
    )
    if args.json:
        print_json(result)
    else:
        _print(result)
    return 0
