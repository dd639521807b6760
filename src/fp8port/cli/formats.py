"""`fp8port formats [NAME] [--json]`: the format table, or one format's spec and every code."""

from __future__ import annotations

from ..formats import FORMATS, get_format
from .output import code_bits, code_hex, jsonable, number, pow2, print_json, print_table

HELP = "list the element formats, or show one format's spec and full value table"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("formats", help=HELP, description=HELP)
    p.add_argument("name", nargs="?", help="a format name or alias (e.g. float8_e4m3fn, e2m1, hif8)")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.name is None:
        _list(args.json)
    else:
        _show(get_format(args.name), args.json)
    return 0


def _max(v: float) -> str:
    """448, or 2^127 where the plain number would be a long exponent form."""
    text = number(v)
    return text if len(text) <= 12 else pow2(v)


def _codes(cs: list[str]) -> str:
    return " ".join(cs) or "-"


def _list(as_json: bool) -> None:
    specs = list(FORMATS.values())
    if as_json:
        print_json([s.describe() for s in specs])
        return
    rows = []
    for s in specs:
        d = s.describe()
        rows.append(
            [
                s.name,
                str(s.bits),
                _max(d["max"]),
                pow2(d["min_subnormal"]),
                _codes(d["inf_codes"]),
                _codes(d["nan_codes"]),
                d["summary"],
            ]
        )
    print_table(["format", "bits", "max", "min subnormal", "Inf codes", "NaN codes", "summary"], rows, right={1, 2, 3})


def _value_rows(spec):
    return [(c, float(spec.values[c]), spec.classes[c].value) for c in range(spec.ncodes)]


def _show(spec, as_json: bool) -> None:
    d = spec.describe()
    if as_json:
        codes = [{"code": c, "hex": code_hex(c), "value": jsonable(v), "class": k} for c, v, k in _value_rows(spec)]
        print_json({**d, "codes": codes})
        return
    names = ", ".join(f"{lib}={n}" for lib, n in d["names"].items() if n) or "-"
    fields = [
        ("format", d["name"]),
        ("summary", d["summary"]),
        ("kind", d["kind"]),
        ("bits", d["bits"]),
        ("exponent bits", d["exponent_bits"]),
        ("mantissa bits", d["mantissa_bits"]),
        ("bias", d["bias"]),
        ("signed", d["signed"]),
        ("max", _max(d["max"]) + ("" if _max(d["max"]) == number(d["max"]) else f" ({number(d['max'])})")),
        ("min normal", f"{pow2(d['min_normal'])} ({number(d['min_normal'])})"),
        ("min subnormal", f"{pow2(d['min_subnormal'])} ({number(d['min_subnormal'])})"),
        ("emax", d["emax"]),
        ("Inf codes", _codes(d["inf_codes"])),
        ("NaN codes", _codes(d["nan_codes"])),
        ("negative zero", d["negative_zero"]),
        ("library names", names),
    ]
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        if value is not None:
            print(f"{key + ':':<{width + 1}} {value}")
    print()
    rows = [[code_hex(c), code_bits(c, spec.bits), number(v), k] for c, v, k in _value_rows(spec)]
    print_table(["code", "bits", "value", "class"], rows, right={2})
