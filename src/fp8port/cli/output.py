"""Presentation shared by the verbs: exact number text, aligned tables, strict JSON."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Container

from ..jsonsafe import json_safe


def number(v: float) -> str:
    """Exact, short text for a value: 448, -0, 0.001953125, nan, -inf, 1.7014118346046923e+38."""
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    if v.is_integer() and abs(v) < 1e16:
        return str(int(v))
    return repr(v)


def pow2(v: float) -> str:
    """'2^-9' for an exact power of two, else `number(v)`."""
    m, e = math.frexp(float(v))
    return f"2^{e - 1}" if m == 0.5 else number(v)


def code_hex(code: int) -> str:
    return f"0x{int(code):02x}"


def code_bits(code: int, bits: int) -> str:
    return format(int(code), f"0{bits}b")


def jsonable(v: float):
    """Finite floats stay numbers; NaN and Inf become strings, so the output is strict JSON."""
    v = float(v)
    return number(v) if not math.isfinite(v) else v


def print_json(obj) -> None:
    json.dump(json_safe(obj), sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")


def print_table(headers: list[str], rows: list[list[str]], right: Container[int] = ()) -> None:
    """Columns padded to their widest cell; columns in `right` (numbers) right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def line(cells):
        parts = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    print(line(headers))
    print(line(["-" * w for w in widths]))
    for row in rows:
        print(line(row))
