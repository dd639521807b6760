"""`fp8port eval MODEL [--presets ...]` (a dense model under presets) or
`fp8port eval CKPT [--reference DENSE] [--as ENGINE,...]` (a checkpoint as stored and as engines load it)."""

from __future__ import annotations

import sys

from ..errors import Fp8portError
from .output import print_json, print_table

HELP = "fidelity: a dense model under presets, or a checkpoint as stored and as each engine loads it"
DEFAULT = "deepseek-v3,deepseek-v3.1,mxfp8,mxfp4,nvfp4,hif8"
DEFAULT_MODES = "weight-only,w8a8"


def add_parser(subparsers) -> None:
    from ..engines import ENGINES

    p = subparsers.add_parser("eval", help=HELP, description=HELP)
    p.add_argument(
        "model",
        help="a Hugging Face causal LM folder: dense (presets are applied to it) or quantized in "
        "any layout fp8port reads (evaluated as stored)",
    )
    p.add_argument(
        "--reference",
        metavar="DENSE",
        help="the dense original of a quantized MODEL to compare with (default: MODEL's own exact dequantization)",
    )
    p.add_argument(
        "--as",
        dest="engines",
        metavar="ENGINE[,ENGINE...]",
        help=f"also evaluate MODEL as each engine holds it after loading: {', '.join(ENGINES)}",
    )
    p.add_argument("--presets", help=f"dense MODEL: comma-separated presets (default {DEFAULT})")
    p.add_argument("--modes", help=f"dense MODEL: comma-separated, of weight-only, w8a8 (default {DEFAULT_MODES})")
    p.add_argument(
        "--text",
        action="append",
        metavar="FILE",
        help="evaluation text (repeatable; default: /usr/share/common-licenses/*)",
    )
    p.add_argument("--report", metavar="DIR", help="write index.html and report.json here")
    p.add_argument("--max-tokens", type=int, default=512, help="token budget (default 512)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per row (default 128)")
    p.add_argument(
        "--sensitivity-layers",
        type=int,
        default=6,
        help="layers measured one at a time (default 6; the worst by output SQNR)",
    )
    p.add_argument("--sensitivity-preset", help="dense MODEL: preset for the sensitivity scan (default: the worst)")
    p.add_argument("--json", action="store_true", help="the whole report as JSON on stdout")
    p.set_defaults(run=run)


def summary_rows(report: dict) -> list[list[str]]:
    """The compact table: one line for the reference, one per preset (or variant) x mode."""
    ref = report["reference"]
    rows = [[ref.get("label", "unquantized"), "-", f"{ref['ppl']:.3f}", "0", "1", f"{ref['weight_mb']:.1f}"]]
    for r in report["rows"]:
        rows.append(
            [r["preset"], r["mode"], f"{r['ppl']:.3f}", f"{r['kl']:.5f}", f"{r['top1']:.4f}", f"{r['weight_mb']:.1f}"]
        )
    return rows


HEADERS = ["preset", "mode", "ppl", "KL", "top-1", "weight MB"]


def _db(v) -> str:
    return v if isinstance(v, str) else f"{v:.2f}"  # the report writes inf / nan as strings


def run(args) -> int:
    from ..eval import evaluate, evaluate_checkpoint, is_quantized

    if args.max_tokens < 2:
        raise Fp8portError("--max-tokens must be at least 2")
    common = dict(
        texts=args.text,
        report_dir=args.report,
        max_tokens=args.max_tokens,
        seq_len=args.seq_len,
        sensitivity_layers=args.sensitivity_layers,
    )
    if args.reference or args.engines or is_quantized(args.model):
        for flag, value in (
            ("--presets", args.presets),
            ("--modes", args.modes),
            ("--sensitivity-preset", args.sensitivity_preset),
        ):
            if value:
                raise Fp8portError(
                    f"{flag} applies to a dense model; {args.model} is evaluated as a checkpoint "
                    "(as stored, and --as ENGINE)"
                )
        report = evaluate_checkpoint(args.model, reference=args.reference, engines=args.engines or (), **common)
    else:
        presets = [p for p in (args.presets or DEFAULT).split(",") if p.strip()]
        modes = [m for m in (args.modes or DEFAULT_MODES).split(",") if m.strip()]
        report = evaluate(
            args.model, presets=presets, modes=modes, sensitivity_preset=args.sensitivity_preset, **common
        )
    if args.json:
        print_json(report)
        return 0
    print_table(HEADERS, summary_rows(report), right=range(2, 6))
    for sec in (report.get("checkpoint") or {}).get("engines", []):
        if sec["status"] != "evaluated":
            print(f"{sec['engine']}: no figures: {sec['message']}")
        elif sec["worst"]:
            print(
                f"{sec['engine']}: loses most in "
                + ", ".join(
                    f"{w['layer']} ({_db(w['sqnr_db'])} dB, stored {_db(w['stored_sqnr_db'])})"
                    for w in sec["worst"][:3]
                )
            )
    s = report["sensitivity"]
    if s["measured"]:
        print(
            f"\nmost sensitive layers under {s['preset']} (ΔKL alone): "
            + ", ".join(f"{r['layer']} {r['delta_kl']:.4f}" for r in s["measured"][:3])
        )
        print(f"keep in higher precision: {', '.join(s['keep']) or 'none'}")
    if args.report:
        print(f"report: {args.report}/index.html", file=sys.stderr)
    return 0
