"""`fp8port demo [--out DIR] [--json]`: the end-to-end job (see fp8port.demo)."""

from __future__ import annotations

from .output import print_json, print_table

HELP = (
    "run the demo: SmolLM2-135M from its wheel converted to deepseek-v3.1, run next to the original, "
    "several presets compared, a report written"
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help=HELP, description=HELP)
    p.add_argument(
        "--out",
        default="fp8port-demo",
        metavar="DIR",
        help="where the checkpoint and the report go (default ./fp8port-demo)",
    )
    p.add_argument("--max-tokens", type=int, default=512, help="evaluation tokens (default 512)")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..demo import SOURCE_NOTE, run_demo
    from .eval import HEADERS, summary_rows

    result = run_demo(args.out, max_tokens=args.max_tokens)
    if args.json:
        print_json(result)
        return 0
    gen = result["extra"]["generation"]
    print(f"prompt: {gen['prompt']}")
    print(f"  original (BF16):         {gen['original']}")
    print(f"  {gen['preset']} checkpoint: {gen['quantized']}\n")
    t = result["texts"]
    print(
        f"SmolLM2-135M on {t['tokens']} tokens of {len(t['sources'])} licence text(s); "
        "KL and top-1 against the unquantized model:"
    )
    print_table(HEADERS, summary_rows(result), right=range(2, 6))
    s = result["sensitivity"]
    print(
        f"\nmost sensitive layers under {s['preset']} (ΔKL alone): "
        + ", ".join(f"{r['layer']} {r['delta_kl']:.4f}" for r in s["measured"][:3])
    )
    print(f"\nnote: {SOURCE_NOTE}")
    print(f"\nreport: {result['report']['html']}")
    return 0
