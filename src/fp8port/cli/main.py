"""`fp8port` entry point: parse, dispatch to a verb, turn typed errors into one line.

A verb is a module with `add_parser(subparsers)` (which sets `run` as the parser's
default) and `run(args) -> int`; adding one is adding it to `VERBS`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..errors import Fp8portError
from . import checkpoint, conform, decode, demo, encode, eval, formats, plan, profiles, run, targets

VERBS = (demo, formats, profiles, encode, decode, checkpoint, run, eval, targets, plan, conform)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fp8port", description="Bit-exact low-precision number formats: inspect, encode, decode."
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in VERBS:
        verb.add_parser(sub)
    return parser


def _quiet_libraries() -> None:
    # torchao (present when the test extras are installed) logs a warning per CUDA-only extension
    # it cannot load on a CPU machine, and torch's pytree a deprecation about torchao's enums,
    # whenever transformers imports it: noise about nothing the user asked for.
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage (2) or help (0)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.run(args)
    except Fp8portError as exc:
        message = " ".join(str(exc).split())  # always one line
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # `fp8port formats hifloat8 | head`: stop quietly; point stdout at devnull so the
        # interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; a conversion continues with the same command and --resume", file=sys.stderr)
        return 130
    except OSError as exc:  # a file the user named: missing, unreadable, a full disk
        print(
            f"{parser.prog}: error: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
