"""`fp8port decode FMT CODE...`: the value and class of codes given in hex or decimal."""

from __future__ import annotations

import argparse

import numpy as np

from ..codec.api import decode
from ..formats import get_format
from .output import code_bits, code_hex, jsonable, number, print_json, print_table

HELP = "decode codes (hex like 0x7e, or decimal) to their values"


def parse_code(text: str) -> int:
    """0x7e, 0b1111110, 0o176 or 126 (leading zeros allowed: 007)."""
    try:
        code = int(text, 0)
    except ValueError:
        try:
            code = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a code: {text!r} (use hex like 0x7e, or decimal)") from None
    if not 0 <= code <= 0xFF:
        raise argparse.ArgumentTypeError(f"code {text!r} is not a byte (0..255)")
    return code


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("decode", help=HELP, description=HELP)
    p.add_argument("format", help="a format name or alias")
    p.add_argument("codes", nargs="+", type=parse_code, metavar="CODE", help="codes: 0x7e or 126")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(run=run)


def run(args) -> int:
    spec = get_format(args.format)
    codes = np.array(args.codes, dtype=np.uint8)
    values = decode(codes, spec)
    classes = [spec.classes[c].value for c in args.codes]
    if args.json:
        print_json(
            {
                "format": spec.name,
                "results": [
                    {"code": c, "hex": code_hex(c), "value": jsonable(v), "class": k}
                    for c, v, k in zip(args.codes, values, classes)
                ],
            }
        )
        return 0
    rows = [[code_hex(c), code_bits(c, spec.bits), number(v), k] for c, v, k in zip(args.codes, values, classes)]
    print_table(["code", "bits", "value", "class"], rows, right={2})
    return 0
