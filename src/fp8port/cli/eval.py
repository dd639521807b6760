"""`fp8port eval MODEL [--presets ...] [--text FILE ...] [--report DIR] [--json] [--max-tokens N]`."""

from __future__ import annotations

import sys

from ..errors import Fp8portError
from .output import print_json, print_table

HELP = "fidelity of a causal LM under each preset: perplexity, KL, top-1, per-layer clipping, a report"
DEFAULT = "deepseek-v3,deepseek-v3.1,mxfp8,mxfp4,nvfp4,hif8"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help=HELP, description=HELP)
    p.add_argument("model", help="Hugging Face folder of a causal LM (dense weights)")
    p.add_argument("--presets", default=DEFAULT, help=f"comma-separated presets (default {DEFAULT})")
    p.add_argument("--modes", default="weight-only,w8a8", help="comma-separated: weight-only, w8a8")
    p.add_argument("--text", action="append", metavar="FILE", help="evaluation text (repeatable; "
                   "default: /usr/share/common-licenses/*)")
    p.add_argument("--report", metavar="DIR", help="write index.html and report.json here")
    p.add_argument("--max-tokens", type=int, default=512, help="token budget (default 512)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per row (default 128)")
    p.add_argument("--sensitivity-layers", type=int, default=6,
                   help="layers measured one at a time (default 6; the worst by output SQNR)")
    p.add_argument("--sensitivity-preset", help="preset for the sensitivity scan (default: the worst)")
    p.add_argument("--json", action="store_true", help="the whole report as JSON on stdout")
    p.set_defaults(run=run)


def summary_rows(report: dict) -> list[list[str]]:
    """The compact table: one line for the reference, one per preset x mode."""
    ref = report["reference"]
    rows = [["unquantized", "-", f"{ref['ppl']:.3f}", "0", "1", f"{ref['weight_mb']:.1f}"]]
    for r in report["rows"]:
        rows.append([r["preset"], r["mode"], f"{r['ppl']:.3f}", f"{r['kl']:.5f}", f"{r['top1']:.4f}",
                     f"{r['weight_mb']:.1f}"])
    return rows


HEADERS = ["preset", "mode", "ppl", "KL", "top-1", "weight MB"]


def run(args) -> int:
    from ..eval import evaluate

    if args.max_tokens < 2:
        raise Fp8portError("--max-tokens must be at least 2")
    presets = [p for p in args.presets.split(",") if p.strip()]
    modes = [m for m in args.modes.split(",") if m.strip()]
    report = evaluate(args.model, presets=presets, texts=args.text, modes=modes, report_dir=args.report,
                      max_tokens=args.max_tokens, seq_len=args.seq_len, sensitivity_preset=args.sensitivity_preset,
                      sensitivity_layers=args.sensitivity_layers)
    if args.json:
        print_json(report)
        return 0
    print_table(HEADERS, summary_rows(report), right=range(2, 6))
    s = report["sensitivity"]
    print(f"\nmost sensitive layers under {s['preset']} (ΔKL alone): "
          + ", ".join(f"{r['layer']} {r['delta_kl']:.4f}" for r in s["measured"][:3]))
    print(f"keep in higher precision: {', '.join(s['keep']) or 'none'}")
    if args.report:
        print(f"report: {args.report}/index.html", file=sys.stderr)
    return 0
