"""The fidelity report: one dataclass, written as report.json and a self-contained index.html.

The page embeds the same JSON (`<script type="application/json" id="report-data">`) and its
table cells carry `data-row` / `data-key`, so a test can check every shown number against it.
Numbers are rounded to 6 significant digits once, in `to_dict`, so the page, the JSON and
repeated runs agree to the digit.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path

from . import plots

SIG_DIGITS = 6

# column key -> (header, format); one place decides how every table number is shown
COLUMNS = {
    "ppl": ("perplexity", "{:.3f}"),
    "kl": ("KL (nats/token)", "{:.5f}"),
    "top1": ("top-1 agreement", "{:.4f}"),
    "weight_sqnr_db": ("weight SQNR (dB)", "{:.2f}"),
    "linear_mb": ("linears resident (MB)", "{:.2f}"),
    "weight_mb": ("all weights (MB)", "{:.2f}"),
}
SENS_COLUMNS = {
    "proxy_out_sqnr_db": ("layer output SQNR (dB)", "{:.2f}"),
    "delta_kl": ("ΔKL alone (nats/token)", "{:.5f}"),
}


def format_cell(fmt: str, value) -> str:
    """Table text of a JSON value: NaN/Inf arrive as strings and are shown as they are."""
    return value if isinstance(value, str) else fmt.format(value)


def _round(v):
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return float(f"{v:.{SIG_DIGITS}g}")
    if isinstance(v, dict):
        return {k: _round(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_round(x) for x in v]
    return v


@dataclass
class Report:
    model: str
    layers: list[str]  # quantized linears, model order
    presets: list[str]
    modes: list[str]
    texts: dict
    reference: dict  # ppl, weight_mb, linear_mb of the unquantized model (weights as BF16)
    rows: list[dict]  # one per preset x mode: ppl, kl, top1, weight_sqnr_db, linear_mb, weight_mb
    layer_stats: dict  # preset -> metric -> one value per layer
    histograms: dict  # edges (log10 |err| / rms) and per preset {counts, exact}
    sensitivity: dict
    note: str = ""
    extra: dict = field(default_factory=dict)  # anything a caller adds (the demo's generations)
    checkpoint: dict | None = None  # evaluate_checkpoint: path, layout, reference, one section per engine

    def to_dict(self) -> dict:
        return _round(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    def write(self, folder) -> tuple[Path, Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        js = folder / "report.json"
        js.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        html = folder / "index.html"
        html.write_text(render_html(data), encoding="utf-8")
        return html, js


# ---- HTML -------------------------------------------------------------------------------------

CSS = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 8px 0 20px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; font-size: 13px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { background: #fff7e0; border-left: 4px solid #e0a000; padding: 8px 12px; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.engine { border-top: 2px solid #ccc; margin-top: 18px; }
.fail { background: #fdecea; border-left: 4px solid #d62728; padding: 8px 12px; }
.src { color: #666; font-size: 12px; }
"""

ENGINE_COLUMNS = {k: COLUMNS[k] for k in ("ppl", "kl", "top1", "weight_sqnr_db")}
WORST_COLUMNS = {
    "stored_sqnr_db": ("SQNR as stored (dB)", "{:.2f}"),
    "sqnr_db": ("SQNR as held (dB)", "{:.2f}"),
    "changed": ("elements changed", "{:.4f}"),
}


def _short(name: str) -> str:
    """'model.layers.3.self_attn.q_proj' -> '3.q_proj'."""
    parts = name.split(".")
    nums = [p for p in parts if p.isdigit()]
    return f"{nums[0]}.{parts[-1]}" if nums else name


def _summary_table(d: dict) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h, _ in COLUMNS.values())
    out = [f"<table id='summary'><tr><th>preset</th><th>mode</th>{head}</tr>"]
    ref = d["reference"]
    cells = "".join(
        f"<td class='num' data-row='reference' data-key='{k}'>{format_cell(f, ref[k])}</td>"
        if k in ref
        else "<td></td>"
        for k, (_, f) in COLUMNS.items()
    )
    out.append(f"<tr><td>{escape(ref.get('label', 'unquantized (BF16)'))}</td><td>-</td>{cells}</tr>")
    for i, r in enumerate(d["rows"]):
        cells = "".join(
            f"<td class='num' data-row='{i}' data-key='{k}'>{format_cell(f, r[k])}</td>"
            for k, (_, f) in COLUMNS.items()
        )
        out.append(f"<tr><td>{escape(r['preset'])}</td><td>{escape(r['mode'])}</td>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def _sensitivity_table(s: dict) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h, _ in SENS_COLUMNS.values())
    out = [f"<table id='sensitivity'><tr><th>layer</th>{head}<th>keep in higher precision</th></tr>"]
    for i, r in enumerate(s["measured"]):
        cells = "".join(
            f"<td class='num' data-sens='{i}' data-key='{k}'>{format_cell(f, r[k])}</td>"
            for k, (_, f) in SENS_COLUMNS.items()
        )
        keep = "yes" if r["layer"] in s["keep"] else ""
        out.append(f"<tr><td>{escape(r['layer'])}</td>{cells}<td>{keep}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _layer_ticks(layers: list[str]) -> dict[int, str]:
    """An x tick at the first linear of every 5th decoder block."""
    ticks, last = {}, None
    for i, n in enumerate(layers):
        block = next((p for p in n.split(".") if p.isdigit()), None)
        if block is not None and block != last:
            last = block
            if int(block) % 5 == 0:
                ticks[i] = block
    return ticks


def _charts(d: dict) -> str:
    layers, presets, stats = d["layers"], d["presets"], d["layer_stats"]
    floats = {p: [v if not isinstance(v, str) else float(v) for v in stats[p]["sqnr_db"]] for p in presets}
    sqnr = plots.line_chart(
        floats,
        title="Weight SQNR per layer",
        x_label="quantized linear (decoder block)",
        y_label="SQNR (dB)",
        x_ticks=_layer_ticks(layers),
    )
    h = d["histograms"]
    edges = h["edges"]
    shares = {}
    for p in presets:
        c = h["per_preset"][p]["counts"]
        total = sum(c) + h["per_preset"][p]["exact"]
        shares[p] = [100.0 * x / max(total, 1) for x in c]
    centres = {i: f"{edges[i]:g}" for i in range(len(edges) - 1) if float(edges[i]).is_integer()}
    hist = plots.line_chart(
        shares,
        title="Weight error histogram (all quantized linears)",
        x_label="log10(|error| / rms(weights)) of the layer",
        y_label="% of elements",
        x_ticks=centres,
    )
    names = [_short(n) for n in layers]
    every = max(1, len(layers) // 30)
    clip = plots.heat_map(
        names,
        presets,
        [[stats[p]["clipped"][r] for p in presets] for r in range(len(layers))],
        title="Clipped (saturated) fraction",
        rgb=(200, 30, 30),
        row_label_every=every,
    )
    flush = plots.heat_map(
        names,
        presets,
        [[stats[p]["flushed"][r] for p in presets] for r in range(len(layers))],
        title="Flushed-to-zero fraction",
        rgb=(30, 60, 200),
        row_label_every=every,
    )
    sub = plots.heat_map(
        names,
        presets,
        [[stats[p]["subnormal"][r] for p in presets] for r in range(len(layers))],
        title="Subnormal-code fraction",
        rgb=(30, 140, 60),
        row_label_every=every,
    )
    pp = h["per_preset"]
    exact = ", ".join(
        f"{p} {100.0 * pp[p]['exact'] / max(sum(pp[p]['counts']) + pp[p]['exact'], 1):.1f}%" for p in presets
    )
    return (
        f"<h2>Per-layer weight SQNR</h2>{sqnr}\n<h2>Error histogram</h2>{hist}\n"
        f"<p>Elements quantized exactly (not in the histogram): {escape(exact)}.</p>\n"
        f"<h2>Clipping and underflow, layers × presets</h2><p>Log colour scale 1e-6 … 1e-1; grey: none.</p>"
        f"<div class='charts'>{clip}{flush}{sub}</div>"
    )


def _changed_bar(changed: int, total: int, rgb: str) -> str:
    """A 300-pixel bar: the share of linears the engine changes, in its series colour, the rest grey."""
    w = round(300 * changed / max(total, 1))
    return (
        f"<svg width='310' height='18'><rect x='0' y='2' width='300' height='14' fill='{plots.EMPTY}'/>"
        f"<rect x='0' y='2' width='{w}' height='14' fill='{rgb}'/></svg>"
    )


def _engine_sections(d: dict) -> str:
    ck = d.get("checkpoint")
    if not ck or not ck["engines"]:
        return ""
    out = [
        f"<h2>As each engine loads it</h2><p>{escape(ck['path'])} ({escape(ck['layout'])} layout) as the engine "
        "holds it after loading: the transform is fp8port's own code, transcribed from the engine's source and "
        "tested against that transcription. Figures are against the same reference as the table above.</p>"
    ]
    for sec in ck["engines"]:
        name = sec["engine"]
        total = sum(sec["counts"].values())
        changed = sec["counts"].get("requantize", 0) + sec["counts"].get("dequantize", 0)
        out.append(
            f"<section class='engine' id='engine-{escape(name)}'><h3>{escape(name)}</h3>"
            f"<p>{escape(sec['summary'])}</p><p class='src'>Transcribed from {escape(sec['source'])}</p>"
        )
        reasons = "".join(f"<li>{escape(r)}</li>" for r in sec["reasons"])
        counts = ", ".join(f"{v} {k}" for k, v in sec["counts"].items() if v)
        if sec["status"] != "evaluated":
            out.append(
                f"<p class='fail'>No figures: {escape(sec['message'])}</p><p>Linears: {escape(counts)}</p>"
                f"<ul>{reasons}</ul></section>"
            )
            continue
        colour = plots.colour(d["presets"].index(name))
        head = "".join(f"<th>{escape(h)}</th>" for h, _ in ENGINE_COLUMNS.values())
        cells = "".join(
            f"<td class='num' data-engine='{escape(name)}' data-key='{k}'>{format_cell(f, sec[k])}</td>"
            for k, (_, f) in ENGINE_COLUMNS.items()
        )
        out.append(
            f"<table><tr>{head}</tr><tr>{cells}</tr></table>"
            f"<p>Linears changed by loading: {changed} of {total} ({escape(counts)})</p>"
            f"{_changed_bar(changed, total, colour)}<ul>{reasons}</ul>"
        )
        if sec["worst"]:
            wh = "".join(f"<th>{escape(h)}</th>" for h, _ in WORST_COLUMNS.values())
            rows = "".join(
                f"<tr><td>{escape(r['layer'])}</td>"
                + "".join(f"<td class='num'>{format_cell(f, r[k])}</td>" for k, (_, f) in WORST_COLUMNS.items())
                + "</tr>"
                for r in sec["worst"]
            )
            out.append(f"<p>The layers that lose most:</p><table><tr><th>layer</th>{wh}</tr>{rows}</table>")
        out.append("</section>")
    return "\n".join(out)


def _sensitivity_html(s: dict) -> str:
    if not s["measured"]:
        return (
            f"<h2>Layer sensitivity ({escape(s['preset'])})</h2><p>Not measured: without a reference the "
            "checkpoint is its own reference (give --reference to rank its layers).</p>"
        )
    keep = ", ".join(s["keep"]) or "none"
    return f"""<h2>Layer sensitivity ({escape(s["preset"])})</h2>
<p>Every layer's output SQNR on real inputs ranks the layers; the {len(s["measured"])} worst are then quantized
one at a time (all else unquantized) and the KL measured on {s["tokens"]} tokens. The whole model quantized
gives KL {format_cell("{:.5f}", s["full_kl"])} on those tokens; a layer that alone causes at least
{100 * s["keep_share"]:.0f}% of it is worth keeping in higher precision: <b>{escape(keep)}</b>.</p>
{_sensitivity_table(s)}"""


def render_html(d: dict) -> str:
    t = d["texts"]
    s = d["sensitivity"]
    note = f"<p class='note'>{escape(d['note'])}</p>" if d.get("note") else ""
    extra = ""
    gen = d.get("extra", {}).get("generation")
    if gen:
        extra = (
            f"<h2>Generation (greedy)</h2><p><b>prompt:</b> {escape(gen['prompt'])}</p>"
            f"<p><b>original:</b> {escape(gen['original'])}</p>"
            f"<p><b>{escape(gen['preset'])} checkpoint:</b> {escape(gen['quantized'])}</p>"
        )
    payload = json.dumps(d, allow_nan=False).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fp8port fidelity: {escape(d["model"])}</title>
<style>{CSS}</style></head><body>
<h1>Fidelity of {escape(d["model"])} under block-scaled formats</h1>
{note}
<p>Text: {t["tokens"]} tokens ({t["rows"]} rows of {t["seq_len"]}) from {len(t["sources"])} file(s).
KL is KL(reference ‖ quantized) of the next-token distributions, in nats per token, averaged over positions;
top-1 agreement is the share of positions whose most likely next token is unchanged.
Weight-only runs dequantize weights for a dense matmul; w8a8 also quantizes activations with the preset's
activation scheme. Sizes count the quantized linears' codes and scales plus every other weight in BF16.</p>
<h2>{"As stored, and as each engine holds it" if d.get("checkpoint") else "Preset comparison"}</h2>
{_summary_table(d)}
{extra}
{_engine_sections(d)}
{_charts(d)}
{_sensitivity_html(s)}
<script type="application/json" id="report-data">{payload}</script>
</body></html>
"""
