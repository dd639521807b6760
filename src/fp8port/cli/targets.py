"""`fp8port targets [--json]`: the chip profiles, every number with its confidence marker."""

from __future__ import annotations

from .output import print_json, print_table

HELP = "list the hardware targets: memory, bandwidth, dense throughput per format, native formats"
_LEGEND = (
    "[DS] vendor datasheet  [VA] vendor announcement  [PR] press report  [EST] estimate  "
    "[UNVERIFIED] weak or conflicting source  ? not published / not supported. Throughput is dense, per "
    "package (TFLOPS / TOPS for int8); memory GB, bandwidth TB/s, interconnect GB/s. `--json` gives sources."
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("targets", help=HELP, description=HELP)
    p.add_argument("--json", action="store_true", help="machine-readable output with every source on stdout")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..deploy import Column, load_chips

    chips = load_chips().values()
    if args.json:
        print_json([c.to_json() for c in chips])
        return 0
    headers = ["chip", "status", "mem GB", "BW TB/s", *(c.value for c in Column), "link GB/s", "native paths"]
    rows = [
        [
            c.name + (f" (x{c.devices_per_package})" if c.devices_per_package > 1 else ""),
            c.status.value,
            str(c.memory),
            str(c.memory_bandwidth),
            *(str(c.throughput[col]) for col in Column),
            str(c.interconnect),
            f"{','.join(sorted(p.value for p in c.native.paths))} [{c.native.confidence.value}]",
        ]
        for c in chips
    ]
    print_table(headers, rows, right=set(range(2, 3 + len(Column) + 1)))
    print()
    print(_LEGEND)
    print("(xN): devices per package; chip counts are packages.")
    return 0
