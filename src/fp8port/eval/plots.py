"""Inline SVG charts, drawn by hand (no plotting library): lines with a legend, and a heat map.

Legend swatches and heat-map cells are solid rectangles in exact palette colours, so a
screenshot test can find them pixel for pixel.
"""

from __future__ import annotations

import math
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
EMPTY = "#eeeeee"  # a heat-map cell whose value is exactly zero


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    start = math.ceil(lo / step) * step
    return [round(start + i * step, 10) for i in range(int((hi - start) / step) + 1)]


def _legend(names: list[str], x: float, y: float) -> list[str]:
    out = []
    for i, name in enumerate(names):
        yy = y + 18 * i
        out.append(f'<rect x="{x}" y="{yy}" width="14" height="12" fill="{colour(i)}"/>')
        out.append(f'<text x="{x + 20}" y="{yy + 10}" font-size="12">{escape(name)}</text>')
    return out


def line_chart(
    series: dict[str, list[float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    x_ticks: dict[int, str] | None = None,
    width: int = 900,
    height: int = 320,
) -> str:
    """One polyline per series over x = 0..n-1; non-finite points are left out of the line."""
    left, right, top, bottom = 60, 170, 30, 45
    pw, ph = width - left - right, height - top - bottom
    finite = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    pad = (hi - lo) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad
    n = max((len(v) for v in series.values()), default=1)

    def px(i):
        return left + pw * (i / max(n - 1, 1))

    def py(v):
        return top + ph * (1 - (v - lo) / (hi - lo))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
        f'<text x="{left}" y="18" font-size="14" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#ffffff" stroke="#999999"/>',
    ]
    for t in _nice_ticks(lo, hi):
        if lo <= t <= hi:
            out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#dddddd"/>')
            out.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" font-size="11" text-anchor="end">{t:g}</text>')
    for i, label in (x_ticks or {}).items():
        out.append(
            f'<text x="{px(i):.1f}" y="{top + ph + 14}" font-size="10" text-anchor="middle">{escape(label)}</text>'
        )
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 6}" font-size="12" text-anchor="middle">{escape(x_label)}</text>'
    )
    out.append(
        f'<text x="14" y="{top + ph / 2}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + ph / 2})">{escape(y_label)}</text>'
    )
    for k, vs in enumerate(series.values()):
        segment: list[str] = []
        segments = [segment]
        for i, v in enumerate(vs):
            if v is None or not math.isfinite(v):
                segment = []
                segments.append(segment)
                continue
            segment.append(f"{px(i):.1f},{py(v):.1f}")
        for seg in segments:
            if len(seg) > 1:
                out.append(f'<polyline fill="none" stroke="{colour(k)}" stroke-width="1.5" points="{" ".join(seg)}"/>')
    out += _legend(list(series), left + pw + 15, top + 5)
    out.append("</svg>")
    return "\n".join(out)


def _ramp(value: float, rgb: tuple[int, int, int], lo_exp: float = -6, hi_exp: float = -1) -> str:
    """White to `rgb` on a log scale from 10^lo_exp to 10^hi_exp; EMPTY for exactly zero."""
    if not value or not math.isfinite(value):
        return EMPTY
    t = min(max((math.log10(value) - lo_exp) / (hi_exp - lo_exp), 0.0), 1.0)
    t = 0.15 + 0.85 * t  # the smallest non-zero value still differs from white
    c = [round(255 + (ch - 255) * t) for ch in rgb]
    return "#{:02x}{:02x}{:02x}".format(*c)


def heat_map(
    rows: list[str],
    cols: list[str],
    values: list[list[float]],
    *,
    title: str,
    rgb: tuple[int, int, int],
    row_label_every: int = 1,
    cell_w: int = 34,
    cell_h: int = 3,
) -> str:
    """values[r][c], a fraction in [0, 1]; colour on a log scale 1e-6 .. 1e-1, grey for zero."""
    left, top = 140, 80
    width, height = left + max(cell_w * len(cols), 40 * 6) + 20, top + cell_h * len(rows) + 50
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
        f'<text x="4" y="16" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    for c, name in enumerate(cols):
        x = left + cell_w * c + cell_w / 2
        out.append(
            f'<text x="{x}" y="{top - 6}" font-size="10" transform="rotate(-45 {x} {top - 6})">{escape(name)}</text>'
        )
    for r, name in enumerate(rows):
        y = top + cell_h * r
        if r % row_label_every == 0:
            out.append(f'<text x="{left - 4}" y="{y + cell_h}" font-size="9" text-anchor="end">{escape(name)}</text>')
        for c in range(len(cols)):
            out.append(
                f'<rect x="{left + cell_w * c}" y="{y}" width="{cell_w}" height="{cell_h}" '
                f'fill="{_ramp(values[r][c], rgb)}"/>'
            )
    ly = top + cell_h * len(rows) + 14
    for i, e in enumerate(range(-6, 0)):
        x = left + 40 * i
        out.append(f'<rect x="{x}" y="{ly}" width="38" height="10" fill="{_ramp(10.0**e, rgb)}"/>')
        out.append(f'<text x="{x + 19}" y="{ly + 24}" font-size="9" text-anchor="middle">1e{e}</text>')
    out.append("</svg>")
    return "\n".join(out)
