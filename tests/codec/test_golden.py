"""Named golden cases (tests/golden/codec_cases.json), asserted on every backend and,
where a case names one, against the library it describes."""

from __future__ import annotations

import json
from pathlib import Path

import en_dtypes
import ml_dtypes
import numpy as np
import pytest
import torch

import fp8port
from fp8port.formats import get_format

CASES = json.loads((Path(__file__).parents[1] / "golden" / "codec_cases.json").read_text())["cases"]
SPECIAL = {"nan": np.nan, "-nan": -np.nan, "inf": np.inf, "-inf": -np.inf, "-0.0": -0.0}


def value(case) -> np.float32:
    x = case["input"]
    if isinstance(x, str) and x.startswith("0x"):
        return np.uint32(int(x, 16)).view(np.float32)
    if isinstance(x, str):
        v = np.float32(SPECIAL[x])
        return -np.abs(v) if x.startswith("-") else v  # np.float32(-nan) may drop the sign
    return np.float32(x)


def library_byte(case) -> int:
    spec = get_format(case["format"])
    x = np.array([value(case)], np.float32)
    lib = case["library"]
    if lib == "torch":
        return int(torch.from_numpy(x).to(getattr(torch, spec.torch)).view(torch.uint8)[0])
    mod, name = (ml_dtypes, spec.ml_dtypes) if lib == "ml_dtypes" else (en_dtypes, spec.en_dtypes)
    return int(x.astype(getattr(mod, name)).view(np.uint8)[0])


def _failures(backend):
    out = []
    for c in CASES:
        x = np.array([value(c)], np.float32)
        got = int(
            fp8port.encode(
                x,
                c["format"],
                profile=c.get("profile"),
                rounding=c.get("rounding"),
                overflow=c.get("overflow"),
                backend=backend,
            )[0]
        )
        want = int(c["expected"], 16)
        if got != want:
            dec = fp8port.decode(np.array([got, want], np.uint8), c["format"])
            out.append(
                f"{c['name']}: input {float(x[0])!r} expected 0x{want:02x} ({dec[1]}) "
                f"got 0x{got:02x} ({dec[0]}) -- {c['why']}"
            )
    return out


@pytest.mark.parametrize("backend", ["fast", "reference"])
def test_golden_cases(backend):
    failures = _failures(backend)
    assert not failures, f"{len(failures)} golden case(s) failed on {backend}:\n" + "\n".join(failures)


def test_golden_cases_hold_for_their_libraries():
    cases = [c for c in CASES if "library" in c]
    assert len(cases) > 40
    bad = [
        f"{c['name']}: expected {c['expected']}, {c['library']} gives 0x{library_byte(c):02x}"
        for c in cases
        if library_byte(c) != int(c["expected"], 16)
    ]
    assert not bad, "\n".join(bad)


def test_case_names_unique_and_explained():
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    assert all(len(c["why"]) > 20 for c in CASES)
