"""Targets: whose behaviour a case's expected output follows, and that output itself.

An element target is a codec profile, optionally with a forced rounding ("ml_dtypes",
"ml_dtypes@away"); a block target is a preset, optionally with another scale rule
("mxfp8", "mxfp8@rceil"). `expected(case, target)` computes the golden codes and scales.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

import numpy as np

from ..codec.api import encode
from ..codec.policy import Rounding
from ..codec.profiles import PROFILES, Profile, Rules, get_profile
from ..errors import UnknownNameError
from ..formats import FormatSpec
from ..quant import PRESETS, Preset, ScaleRule, get_preset, quantize
from ..quant.scheme import ScaleStorage, Scheme
from .cases import Case, CaseKind

# Stochastic rounding is left out: no other implementation can reproduce our random stream.
ROUNDINGS = (Rounding.RNE, Rounding.AWAY, Rounding.ZERO)


class ScaleKind(enum.Enum):
    """How expected scales are written: bytes for byte storages, float32 values otherwise."""

    E8M0 = "e8m0"
    E4M3 = "e4m3"
    FLOAT32 = "float32"


@dataclass(frozen=True, eq=False)
class Expected:
    codes: np.ndarray  # uint8, the input's shape
    scales: np.ndarray | None  # uint8 bytes (E8M0/E4M3) or float32, on the block grid
    scale_kind: ScaleKind | None


@dataclass(frozen=True)
class ElementTarget:
    profile: Profile
    rounding: Rounding | None = None  # None: the profile's own

    @property
    def name(self) -> str:
        return self.profile.name + (f"@{self.rounding.value}" if self.rounding else "")

    def covers(self, case: Case) -> bool:
        return case.kind is CaseKind.ELEMENT and self.profile.covers(case.fmt)

    def rules(self, spec: FormatSpec) -> Rules:
        r = self.profile.rules(spec)
        return replace(r, rounding=self.rounding) if self.rounding else r


@dataclass(frozen=True)
class BlockTarget:
    preset: Preset
    rule: ScaleRule | None = None  # None: the preset's own

    @property
    def name(self) -> str:
        return self.preset.name + (f"@{self.rule.value}" if self.rule else "")

    def covers(self, case: Case) -> bool:
        return case.kind is CaseKind.BLOCK and case.preset.name == self.preset.name

    def scheme(self, role) -> Scheme:
        s = self.preset.scheme(role)
        return s.with_(scale_rule=self.rule) if self.rule else s


def rules_for(scheme: Scheme) -> list[ScaleRule]:
    """Scale rules a preset's scheme can take: NVFP4 only with its own storage; E8M0 storage
    needs power-of-two rules; the Ascend family (msModelSlim's rules) only with presets of that family."""
    two_level = (ScaleRule.NVFP4, ScaleRule.CT_NVFP4)
    if scheme.storage is ScaleStorage.E4M3_TENSOR:
        return list(two_level)
    return [
        r
        for r in ScaleRule
        if r not in two_level
        and (not r.ascend or scheme.scale_rule.ascend)
        and (r.power_of_two or scheme.storage is not ScaleStorage.E8M0)
    ]


def scale_kind(storage: ScaleStorage) -> ScaleKind:
    return {ScaleStorage.E8M0: ScaleKind.E8M0, ScaleStorage.E4M3_TENSOR: ScaleKind.E4M3}.get(storage, ScaleKind.FLOAT32)


def element_targets(formats) -> list[ElementTarget]:
    """Each profile covering one of `formats`, plus each forced rounding that changes a rule."""
    out = []
    for p in PROFILES.values():
        specs = [f for f in formats if p.covers(f)]
        if not specs:
            continue
        out.append(ElementTarget(p))
        for r in ROUNDINGS:
            if any(p.rules(f).rounding is not r for f in specs):
                out.append(ElementTarget(p, r))
    return out


def block_targets(presets) -> list[BlockTarget]:
    out = []
    for p in presets:
        p = get_preset(p)
        out.append(BlockTarget(p))
        own = p.activation.scale_rule
        out.extend(BlockTarget(p, r) for r in rules_for(p.activation) if r is not own)
    return out


def parse_target(text) -> ElementTarget | BlockTarget:
    """'ml_dtypes', 'torch@away', 'mxfp8', 'deepseek-v3.1@log2_ceil'."""
    if isinstance(text, (ElementTarget, BlockTarget)):
        return text
    base, _, variant = str(text).strip().partition("@")
    try:
        preset = get_preset(base)
    except UnknownNameError:
        preset = None
    if preset is not None:
        if not variant:
            return BlockTarget(preset)
        rule = ScaleRule.parse(variant)
        if rule not in rules_for(preset.activation):
            raise UnknownNameError(
                f"scale rule for preset {preset.name}", variant, [r.value for r in rules_for(preset.activation)]
            )
        return BlockTarget(preset, None if rule is preset.activation.scale_rule else rule)
    try:
        profile = get_profile(base)
    except UnknownNameError:
        raise UnknownNameError("profile or preset", text, [*PROFILES, *PRESETS]) from None
    return ElementTarget(profile, Rounding.parse(variant) if variant else None)


def scheme_output(x: np.ndarray, scheme: Scheme, role) -> Expected:
    """Codes and stored scales of `x` under `scheme` (NaN/Inf quantized, not refused)."""
    q = quantize(x, scheme, role=role, nonfinite="propagate")
    kind = scale_kind(scheme.storage)
    stored = np.asarray(q.scale)
    scales = stored.view(np.uint8) if kind is not ScaleKind.FLOAT32 else stored.astype(np.float32)
    return Expected(np.asarray(q.codes, dtype=np.uint8), scales, kind)


def element_output(x: np.ndarray, spec: FormatSpec, rules: Rules) -> Expected:
    return Expected(np.asarray(encode(x, spec, profile=_rules_profile(spec, rules)), np.uint8), None, None)


def _rules_profile(spec: FormatSpec, rules: Rules) -> Profile:
    """A one-format profile that resolves to exactly `rules` (so encode takes any Rules)."""
    fields = {f: getattr(rules, f) for f in rules.__dataclass_fields__}
    return Profile("conform-variant", "", base=fields, formats=frozenset({spec.name}))


def expected(case: Case, target) -> Expected:
    target = parse_target(target)
    if not target.covers(case):
        raise UnknownNameError(f"case of target {target.name}", case.name, [])
    if case.kind is CaseKind.ELEMENT:
        return element_output(case.inputs, case.fmt, target.rules(case.fmt))
    return scheme_output(case.inputs, target.scheme(case.role), case.role)
