"""`check`: another implementation's outputs against one target's golden outputs, case by case."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import Fp8portError
from .cases import Case, CaseKind, catalogue
from .compare import CaseResult, Status, compare
from .io import read_bundle
from .targets import BlockTarget, ElementTarget, expected, parse_target


class NothingToCheckError(Fp8portError, ValueError):
    """Outputs that name no case of the chosen target."""


@dataclass(frozen=True)
class Outputs:
    """An implementation's results, by case name: codes, and scales for block cases."""

    codes: dict[str, np.ndarray]
    scales: dict[str, np.ndarray]
    other: tuple[str, ...]  # keys that are neither '<case>/codes', '<case>/scales' nor '<case>/inputs'
    inputs: dict[str, np.ndarray] = field(default_factory=dict)  # identify: cases outside the catalogue

    @classmethod
    def read(cls, path) -> Outputs:
        return cls.from_arrays(read_bundle(path))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Outputs:
        codes, scales, inputs, other = {}, {}, {}, []
        for key, a in arrays.items():
            base, _, leaf = key.rpartition("/")
            if leaf == "codes":
                codes[base] = a
            elif leaf == "scales":
                scales[base] = a
            elif leaf == "inputs":
                inputs[base] = a
            else:
                other.append(key)
        return cls(codes, scales, tuple(sorted(other)), inputs)


@dataclass(frozen=True)
class CheckReport:
    target: str
    results: tuple[CaseResult, ...]  # one per case of the target, in catalogue order
    unknown: tuple[str, ...]  # outputs that are not cases of the target

    @property
    def compared(self) -> list[CaseResult]:
        return [r for r in self.results if r.status is not Status.MISSING]

    @property
    def mismatched(self) -> list[CaseResult]:
        return [r for r in self.results if r.status is Status.MISMATCH]

    @property
    def missing(self) -> list[CaseResult]:
        return [r for r in self.results if r.status is Status.MISSING]

    @property
    def ok(self) -> bool:
        return not self.mismatched


def target_cases(target) -> list[Case]:
    if isinstance(target, ElementTarget):
        from ..formats import FORMATS

        return catalogue([f for f in FORMATS.values() if target.profile.covers(f)], [])
    return catalogue([], [target.preset.name])


def check(outputs_path, against) -> CheckReport:
    """Compare the outputs at `outputs_path` with target `against` ('ml_dtypes', 'mxfp8@rceil', ...)."""
    target: ElementTarget | BlockTarget = parse_target(against)
    outputs = outputs_path if isinstance(outputs_path, Outputs) else Outputs.read(outputs_path)
    cases = target_cases(target)
    names = {c.name for c in cases}
    unknown = tuple(
        sorted(
            {
                *(k for k in outputs.codes if k not in names),
                *outputs.other,
                *(k for k in outputs.scales if k not in outputs.codes),
            }
        )
    )
    results = []
    for c in cases:
        if c.name not in outputs.codes:
            results.append(CaseResult(c.name, Status.MISSING))
            continue
        exp = expected(c, target)
        spec = c.fmt if c.kind is CaseKind.ELEMENT else target.scheme(c.role).element
        results.append(compare(c, exp, spec, outputs.codes[c.name], outputs.scales.get(c.name)))
    report = CheckReport(target.name, tuple(results), unknown)
    if not report.compared:
        sample = ", ".join(list(outputs.codes)[:3]) or "none"
        raise NothingToCheckError(
            f"the outputs name no case of target {target.name!r} (their case keys: {sample}); keys must be "
            f"'<case>/codes' with case names from the export's manifest.json, e.g. {cases[0].name}/codes"
        )
    return report
