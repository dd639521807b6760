"""`fp8port demo [--json]`: the built-in default job (see fp8port.demo)."""

from __future__ import annotations

import sys

from ..demo import run_demo
from .output import print_json

HELP = "run the built-in demo: every format on a weight-like tensor, then the block-scaled presets"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help=HELP, description=HELP)
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(run=run)


def run(args) -> int:
    print("fp8port demo: encoding a 256x576 weight-like tensor ...", file=sys.stderr)
    result = run_demo()
    if args.json:
        print_json(result)
        return 0
    t = result["tensor"]
    print(f"demo tensor {t['shape'][0]}x{t['shape'][1]}, amax {t['amax']:.4g}\n")
    print("one power-of-two scale for the whole tensor:")
    print(f"  {'format':16s} {'bits':>4s} {'SQNR dB':>8s} {'flushed to 0':>13s}  re-encodes to itself")
    for r in result["per_tensor_scale"]:
        print(f"  {r['format']:16s} {r['bits']:4d} {r['sqnr_db']:8.2f} {r['flushed_to_zero']:13.2%}  "
              f"{'yes' if r['roundtrip_exact'] else 'NO'}")
    if "block_scaled" in result:
        print("\nblock-scaled presets (one scale per block, as weights):")
        print(f"  {'preset':16s} {'SQNR dB':>8s} {'scales':>7s}")
        for r in result["block_scaled"]:
            print(f"  {r['preset']:16s} {r['sqnr_db']:8.2f} {r['scales']:7d}")
    return 0
