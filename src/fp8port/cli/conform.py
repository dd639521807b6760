"""`fp8port conform export|check|identify`: golden vectors for kernel writers, and their verdict."""

from __future__ import annotations

from .output import jsonable, number, print_json, print_table

HELP = "conformance kit: export golden vectors, check an implementation's outputs, identify its behaviour"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("conform", help=HELP, description=HELP)
    sub = p.add_subparsers(dest="conform_verb", metavar="SUBVERB", required=True)
    e = sub.add_parser("export", help="write inputs, expected codes/scales and manifest.json into DIR")
    e.add_argument("directory", metavar="DIR")
    e.add_argument("--formats", nargs="*", help="element formats (default: all; none: no element cases)")
    e.add_argument("--presets", nargs="*", help="block presets (default: all; none: no block cases)")
    e.set_defaults(run=run_export)
    c = sub.add_parser("check", help="compare OUTPUTS (.npz, .safetensors, .npy tree) with a target")
    c.add_argument("outputs", metavar="OUTPUTS")
    c.add_argument(
        "--against",
        required=True,
        metavar="PRESET_OR_PROFILE",
        help="a profile (ml_dtypes, torch@away) or preset (mxfp8, deepseek-v3.1@log2_ceil)",
    )
    c.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    c.set_defaults(run=run_check)
    i = sub.add_parser(
        "identify",
        help="name the known behaviour OUTPUTS implement, and the deviations "
        "(cases of your own: add '<case>/inputs' beside '<case>/codes')",
    )
    i.add_argument("outputs", metavar="OUTPUTS")
    i.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    i.set_defaults(run=run_identify)


def run_export(args) -> int:
    from ..conform import export

    r = export(args.directory, formats=args.formats, presets=args.presets)
    print(f"wrote {r.cases} cases, {len(r.targets)} targets, {len(r.files)} files to {r.directory}")
    print("targets: " + " ".join(r.targets))
    return 0


def _mismatch_json(m) -> dict:
    return {
        "array": m.array,
        "index": list(m.index),
        "expected": m.expected,
        "got": m.got,
        "expected_value": jsonable(m.expected_value),
        "got_value": jsonable(m.got_value),
    }


def _few(names: list[str], n: int = 4) -> str:
    return " ".join(names[:n]) + (f" ... (--json lists all {len(names)})" if len(names) > n else "")


def run_check(args) -> int:
    from ..conform import check

    rep = check(args.outputs, args.against)
    if args.json:
        print_json(
            {
                "target": rep.target,
                "ok": rep.ok,
                "summary": {
                    "compared": len(rep.compared),
                    "mismatched": len(rep.mismatched),
                    "missing": len(rep.missing),
                },
                "cases": [
                    {
                        "case": r.case,
                        "status": r.status.value,
                        "code_mismatches": r.code_mismatches,
                        "scale_mismatches": r.scale_mismatches,
                        "scales_given": r.scales_given,
                        "first": [_mismatch_json(m) for m in r.first],
                    }
                    for r in rep.results
                ],
                "unknown_keys": list(rep.unknown),
            }
        )
        return 0 if rep.ok else 1
    rows = []
    for r in rep.compared:
        m = r.first[0] if r.first else None
        rows.append(
            [
                r.case,
                r.status.value,
                str(r.code_mismatches),
                str(r.scale_mismatches),
                f"{m.array}{list(m.index)}" if m else "",
                f"{m.expected} ({number(m.expected_value)})" if m else "",
                f"{m.got} ({number(m.got_value)})" if m else "",
            ]
        )
    print(
        f"against {rep.target}: {len(rep.compared)} cases compared, {len(rep.mismatched)} mismatched, "
        f"{len(rep.missing)} missing"
    )
    print_table(["case", "status", "codes", "scales", "first at", "expected", "got"], rows, right={2, 3})
    if rep.missing:
        print(f"missing ({len(rep.missing)}): " + _few([r.case for r in rep.missing]))
    if rep.unknown:
        print(f"not cases of this target ({len(rep.unknown)}): " + _few(list(rep.unknown)))
    return 0 if rep.ok else 1


def run_identify(args) -> int:
    from ..conform import identify

    rep = identify(args.outputs)
    if args.json:
        print_json(
            {
                "groups": [
                    {
                        "group": g.group,
                        "kind": g.kind.value,
                        "best": g.best,
                        "matched": g.matched,
                        "cases": g.cases,
                        "versus_preset": g.versus_preset,
                        "runner_up": g.runner_up,
                        "summary": g.summary,
                        "deviations": [
                            {
                                "case": d.case,
                                "scenario": d.scenario,
                                "mismatches": d.mismatches,
                                "explanation": d.explanation,
                                "first": [_mismatch_json(m) for m in d.first],
                            }
                            for d in g.deviations
                        ],
                    }
                    for g in rep.groups
                ],
                "unknown_keys": list(rep.unknown),
            }
        )
        return 0
    for g in rep.groups:
        print(f"{g.group}: best match {g.best} ({g.matched}/{g.cases} cases exact)")
        if g.versus_preset:
            print(f"  differs from the preset: {g.versus_preset}")
        for d in g.deviations:
            m = d.first[0] if d.first else None
            where = f"; first {m.array}{list(m.index)}: expected {m.expected}, got {m.got}" if m else ""
            print(
                f"  except {d.scenario} ({d.mismatches} mismatches{where}): "
                f"{d.explanation or 'no known variant explains it'}"
            )
    return 0
