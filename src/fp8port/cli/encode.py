"""`fp8port encode FMT VALUE...`: a calculator for kernel writers: value -> code -> value."""

from __future__ import annotations

import argparse
import re

import numpy as np

from ..codec.api import decode, encode
from ..codec.profiles import get_profile, resolve
from .output import code_bits, code_hex, jsonable, number, print_json, print_table

HELP = "encode numbers and show each code and the value it decodes to"

# argparse reads "-inf" or "-1e-3" as an unknown option; these are values here.
_NEGATIVE_VALUE = re.compile(r"^-(\d|\.\d|inf|nan|0x)", re.IGNORECASE)


def parse_value(text: str) -> float:
    """A decimal (1.5, -1e-3, nan, -inf) or C99 hex float (0x1.8p3)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return float.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("encode", help=HELP, description=HELP)
    p.add_argument("format", help="a format name or alias")
    p.add_argument(
        "values", nargs="+", type=parse_value, metavar="VALUE", help="numbers: 1.5, -1e-3, nan, -inf, 0x1.8p3"
    )
    p.add_argument("--profile", help="whose edge behaviour: see `fp8port profiles` (default: default)")
    p.add_argument("--rounding", help="rne | away | zero | stochastic (default: the profile's)")
    p.add_argument("--overflow", help="saturate | nonfinite | error (default: the profile's)")
    p.add_argument("--seed", type=int, help="seed for --rounding stochastic")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    # Private argparse hook, set per instance: without it negative values need a `--` first.
    p._negative_number_matcher = _NEGATIVE_VALUE
    p.set_defaults(run=run)


def run(args) -> int:
    spec, rules = resolve(args.format, args.profile, args.rounding, args.overflow)
    profile = get_profile(args.profile).name
    x = np.array(args.values, dtype=np.float64)
    codes = encode(x, spec, rounding=args.rounding, overflow=args.overflow, profile=args.profile, seed=args.seed)
    back = decode(codes, spec)
    if args.json:
        print_json(
            {
                "format": spec.name,
                "profile": profile,
                "rounding": rules.rounding.value,
                "overflow": rules.overflow.value,
                "results": [
                    {"input": jsonable(v), "code": int(c), "hex": code_hex(c), "decoded": jsonable(d)}
                    for v, c, d in zip(x, codes, back)
                ],
            }
        )
        return 0
    print(f"{spec.name}  profile {profile}  rounding {rules.rounding.value}  overflow {rules.overflow.value}")
    rows = [[number(v), code_hex(c), code_bits(c, spec.bits), number(d)] for v, c, d in zip(x, codes, back)]
    print_table(["input", "code", "bits", "decoded"], rows, right={0, 3})
    return 0
