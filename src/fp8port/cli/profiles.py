"""`fp8port profiles [--json]`: the device profiles, what they do and how that is known."""

from __future__ import annotations

import textwrap

from ..codec.profiles import PROFILES
from .output import print_json

HELP = "list the device profiles (whose edge behaviour encode can reproduce)"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("profiles", help=HELP, description=HELP)
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(run=run)


def _formats(p) -> list[str] | None:
    return None if p.formats is None else sorted(p.formats)


def run(args) -> int:
    if args.json:
        print_json(
            [
                {"name": p.name, "description": p.description, "formats": _formats(p), "verified": p.verified}
                for p in PROFILES.values()
            ]
        )
        return 0
    for i, p in enumerate(PROFILES.values()):
        if i:
            print()
        print(p.name)
        print(f"  formats:  {', '.join(_formats(p) or ['all'])}")
        print(f"  verified: {p.verified}")
        print(textwrap.fill(p.description, width=100, initial_indent="  ", subsequent_indent="  "))
    return 0
