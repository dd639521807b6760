"""`identify`: which known behaviour do these outputs implement, and where do they deviate?

For each group of cases in the outputs (one element format, or one preset and role) every
variant we can generate is scored: element variants are profile x forced rounding x forced
overflow; block variants are scale rule x amax clamp (none / 1e-4) x divide vs reciprocal
(only where scales are not powers of two, elsewhere both are exact) x scale-exponent floor x
element profile, plus known implementation quirks (quirks.py: torchao 0.18 FLOOR/CEIL/EVEN/RCEIL).
The best variant is a rule, never a quirk: it matches the most cases exactly (then fewest
mismatching values, then fewest changes from the preset). Each case it misses is explained by
the closest variant, quirks included, that does match it, in words ("amax: no 1e-4 clamp";
"Inf block: scale from Inf's exponent bits (0xf7), ... (torchao 0.18, D3)").
Cases outside the catalogue are scored too when their inputs come along ('<case>/inputs'): e.g.
a real model's weights with what msModelSlim made of them, against the msmodelslim-* presets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ..codec.policy import Overflow, Rounding
from ..codec.profiles import PROFILES, Rules
from ..formats import FormatSpec
from ..quant import Role, ScaleRule
from ..quant.scheme import Apply, BlockKind, ScaleStorage, Scheme
from .cases import Case, CaseKind, find_case, given_case
from .check import Outputs
from .compare import Mismatch, as_codes, compare
from .quirks import TORCHAO_018, TORCHAO_AS_RULE, TORCHAO_ELEMENTS, TORCHAO_RULES, torchao_018
from .targets import Expected, element_output, rules_for, scheme_output

RULE_WORDS = {
    ScaleRule.UE8M0: "2^ceil(log2(amax/max)) from the float32 bits, DeepGEMM ceil_to_ue8m0",
    ScaleRule.LOG2_CEIL: "2^ceil(log2(amax/max)) with a float32 log2",
    ScaleRule.V3_FLOAT: "float amax/max",
    ScaleRule.FLOOR: "2^(floor(log2 amax) - emax), OCP MX",
    ScaleRule.RCEIL: "2^ceil(log2(amax/max)) from the float32 bits, cuBLAS/TransformerEngine",
    ScaleRule.CEIL: "2^(ceil(log2 amax) - emax)",
    ScaleRule.EVEN: "amax rounded to the element's precision, then FLOOR",
    ScaleRule.MSE_POW2: "least-squares power of two",
    ScaleRule.NVFP4: "NVFP4 two-level scale",
    ScaleRule.CT_MX: "amax rounded at E2M1's mantissa width (ties up), then FLOOR, compressed-tensors",
    ScaleRule.CT_NVFP4: "NVFP4 two-level scale with a bf16 global divisor, compressed-tensors",
    ScaleRule.MSMODELSLIM_INT: "bf16(amax/max) floored at float32 eps, msModelSlim int on a bf16 model",
    ScaleRule.MSMODELSLIM_INT_F32: "float32 amax/max floored at float32 eps, msModelSlim int on a float32 model",
    ScaleRule.MSMODELSLIM_MX: "2^(floor(bf16(log2 amax)) - emax), msModelSlim MXFP8 on a bf16 model",
    ScaleRule.MSMODELSLIM_MX_F32: "2^(floor(float32 log2 amax) - emax), msModelSlim MXFP8 on a float32 model",
    ScaleRule.MSMODELSLIM_MXFP4: "2^(floor(bf16 log2(amax/0.875 + 9.6e-7)) - emax), msModelSlim MXFP4 (bf16)",
    ScaleRule.MSMODELSLIM_MXFP4_F32: "2^(floor(log2(amax/0.875 + 9.6e-7)) - emax), msModelSlim MXFP4 (float32)",
    ScaleRule.MSMODELSLIM_FP8: "bf16(max(amax, 1e-12)/max), msModelSlim FP8 per channel (bf16)",
    ScaleRule.BF16_CEIL: "amax/max rounded up to bf16, fp8port's exact-bf16 int scale",
}
APPLY_WORDS = {
    Apply.DIVIDE: "x / s",
    Apply.RECIPROCAL: "x * fp32(1/s)",
    Apply.BF16_DIVIDE: "bf16(x / s) + 0 (msModelSlim on a bf16 model)",
    Apply.MSMODELSLIM_MXFP8: "x / s with zero quotients +0 (msModelSlim MXFP8)",
    Apply.MSMODELSLIM_MXFP4: "x / s with zero inputs +0 (msModelSlim MXFP4)",
    Apply.RECIPROCAL_UNROUNDED: "x * fp32(1/s) from s before its storage rounds it (ggml Q8_0)",
}
_RULE_FIELDS = (
    "rounding",
    "overflow",
    "inf",
    "nan_code",
    "nan_signed",
    "zero",
    "underflow",
    "negative",
    "f32_subnormal_ceil",
)


@dataclass(frozen=True)
class Variant:
    label: str
    fields: tuple[tuple[str, object], ...]  # what the diff in words compares
    make: Callable[[Case], Expected]
    spec: FormatSpec
    # a quirk variant (one implementation's bugs): the quirks that fire in a case, in words
    explain: Callable[[Case], str] | None = None

    def get(self, name):
        return dict(self.fields)[name]


@dataclass(frozen=True)
class Deviation:
    case: str
    scenario: str
    mismatches: int
    first: tuple[Mismatch, ...]
    explanation: str | None  # the closest variant that matches this case, in words; None: none does


@dataclass(frozen=True)
class GroupResult:
    group: str
    kind: CaseKind
    best: str
    matched: int
    cases: int
    deviations: tuple[Deviation, ...]
    versus_preset: str | None  # block groups: how the best differs from the preset's own scheme
    runner_up: str | None

    @property
    def summary(self) -> str:
        s = f"{self.group}: matches {self.best}"
        if not self.deviations:
            s += f" on all {self.cases} cases"
        else:
            parts = [f"{d.scenario}: {d.explanation or 'no known variant explains it'}" for d in self.deviations]
            s += " except " + "; ".join(parts)
        if self.versus_preset:
            s += f" (vs preset: {self.versus_preset})"
        return s


# ---------------------------------------------------------------- variants


def _norm(rules: Rules) -> Rules:
    return replace(rules, via_float32=False)  # inputs are float32: the float64 path never runs


def _profile_names(spec: FormatSpec, rules: Rules, only=None) -> list[str]:
    out = []
    for p in PROFILES.values():
        if not p.covers(spec):
            continue
        r = _norm(p.rules(spec))
        if all(getattr(r, f) == getattr(rules, f) for f in (only or _RULE_FIELDS)):
            out.append(p.name)
    return out


def _element_rule_sets(spec: FormatSpec, overrides: bool):
    """(label, rules) for every distinct behaviour of `spec`: profiles, then forced knobs."""
    seen: dict[Rules, str] = {}
    knobs = [(None, None)]
    if overrides:
        knobs += [(r, None) for r in (Rounding.RNE, Rounding.AWAY, Rounding.ZERO)]
        knobs += [(None, o) for o in (Overflow.SATURATE, Overflow.NONFINITE)]
    profiles = [p for p in PROFILES.values() if p.covers(spec)]
    for rnd, ov in knobs:  # every plain profile before any forced knob, so names stay plain
        for p in profiles:
            r = _norm(p.rules(spec))
            if rnd is not None:
                r = replace(r, rounding=rnd)
            if ov is not None:
                r = replace(r, overflow=ov, inf=ov)
            if r in seen:
                continue
            label = p.name + (f"@{rnd.value}" if rnd else "") + (f" with overflow={ov.value}" if ov else "")
            seen[r] = label
    return [(label, r) for r, label in seen.items()]


def _rule_fields(r: Rules):
    return tuple((f, getattr(r, f)) for f in _RULE_FIELDS)


def element_variants(spec: FormatSpec) -> list[Variant]:
    out = []
    for label, r in _element_rule_sets(spec, overrides=True):
        same = [n for n in _profile_names(spec, r) if n != label]
        text = label + (f" (= {', '.join(same)})" if same and "@" not in label and "with" not in label else "")
        out.append(Variant(text, _rule_fields(r), lambda c, r=r: element_output(c.inputs, c.fmt, r), spec))
    return out


def block_variants(base: Scheme, role: Role) -> list[Variant]:
    spec = base.element
    # the preset's own rule first; MSE is a search, not a rule anyone implements by accident
    rules = [base.scale_rule] + [r for r in rules_for(base) if r not in (base.scale_rule, ScaleRule.MSE_POW2)]
    clamps = [base.amax_clamp] + ([None] if base.amax_clamp is not None else [1e-4])
    ranges = list(dict.fromkeys([base.exp_range, (-127, 127)]))
    elems = [("preset", _norm(base.rules))] + [
        (lab, r) for lab, r in _element_rule_sets(spec, overrides=False) if r != _norm(base.rules)
    ]
    out = []
    for rule in rules:
        applies = [base.apply] + ([a for a in Apply if a is not base.apply] if not rule.power_of_two else [])
        for clamp in clamps if rule not in (ScaleRule.NVFP4, ScaleRule.CT_NVFP4) else [base.amax_clamp]:
            for rng in ranges:
                for apply in applies:
                    for elab, er in elems:
                        s = replace(
                            base,
                            scale_rule=rule,
                            amax_clamp=clamp,
                            exp_range=rng,
                            apply=apply,
                            rules=er if elab != "preset" else base.rules,
                        )
                        f = (
                            ("scale_rule", rule),
                            ("amax_clamp", clamp),
                            ("exp_range", rng),
                            ("apply", apply),
                            *_rule_fields(er),
                            ("quirks", None),
                        )
                        out.append(
                            Variant(_block_label(s, base, er), f, lambda c, s=s: scheme_output(c.inputs, s, role), spec)
                        )
    return out + _quirk_variants(base)


def _quirk_variants(base: Scheme) -> list[Variant]:
    """torchao 0.18 to_mx FLOOR/CEIL/EVEN/RCEIL with the preset's elements: MX 1x32 E8M0 presets only.
    Last in the list, so a plain rule explains a case first when both are as close. A variant's
    fields name the rule it computes (RCEIL 0.18: log2_ceil), so its words are its quirks alone."""
    if (
        base.storage is not ScaleStorage.E8M0
        or base.block.kind is not BlockKind.VECTOR
        or base.block.size != (32,)
        or base.element.name not in TORCHAO_ELEMENTS
    ):
        return []
    out = []
    for rule in TORCHAO_RULES:
        s = replace(base, scale_rule=rule, amax_clamp=None, exp_range=(-127, 127), apply=Apply.DIVIDE)
        f = (
            ("scale_rule", TORCHAO_AS_RULE.get(rule, rule)),
            ("amax_clamp", None),
            ("exp_range", (-127, 127)),
            ("apply", Apply.DIVIDE),
            *_rule_fields(_norm(base.rules)),
            ("quirks", TORCHAO_018),
        )
        out.append(
            Variant(
                f"{rule.value} [{TORCHAO_018} quirks]",
                f,
                lambda c, s=s: torchao_018(c.inputs, s)[0],
                base.element,
                explain=lambda c, s=s: "; ".join(torchao_018(c.inputs, s)[1]),
            )
        )
    return out


def _block_label(s: Scheme, base: Scheme, er: Rules) -> str:
    extra = _block_diff(s, base, er, _norm(base.rules), spec=s.element)
    return s.scale_rule.value + (f" [{'; '.join(extra)}]" if extra else "")


# ---------------------------------------------------------------- words


def _rule_words(field: str, a, b, spec: FormatSpec) -> str:
    """What value b (the other variant) does where a (the reference) differs, in words."""
    if field == "rounding":
        return {
            Rounding.RNE: "ties round to nearest even",
            Rounding.AWAY: "ties round away from zero",
            Rounding.ZERO: "truncates (rounds toward zero)",
        }.get(b, f"rounding {b.value}")
    if field == "overflow":
        return (
            "finite overflow saturates to +-max"
            if b is Overflow.SATURATE
            else "finite overflow gives Inf/NaN (no saturation)"
        )
    if field == "inf":
        return "+-Inf saturates to +-max" if b is Overflow.SATURATE else "+-Inf stays Inf/NaN"
    if field == "nan_code":
        return f"NaN gives 0x{b:02x} instead of 0x{a:02x}"
    if field == "nan_signed":
        return "-NaN keeps its sign bit" if b else "-NaN loses its sign bit"
    return f"{field.replace('_', ' ')} {getattr(b, 'value', b)} instead of {getattr(a, 'value', a)}"


def _rules_diff(a: Rules, b: Rules, spec: FormatSpec) -> list[str]:
    diff = [f for f in _RULE_FIELDS if getattr(a, f) != getattr(b, f)]
    if not diff:
        return []
    words = [_rule_words(f, getattr(a, f), getattr(b, f), spec) for f in diff]
    like = _profile_names(spec, b, only=diff)
    return [", ".join(words) + (f" (like {', '.join(like)})" if like else "")]


def _block_diff(b: Scheme, a: Scheme, br: Rules, ar: Rules, spec: FormatSpec) -> list[str]:
    """How scheme b differs from scheme a, in words."""
    out = []
    if b.scale_rule is not a.scale_rule:
        out.append(f"scale rule {b.scale_rule.value} ({RULE_WORDS[b.scale_rule]}) instead of {a.scale_rule.value}")
    if b.amax_clamp != a.amax_clamp:
        out.append(
            f"amax: no {a.amax_clamp:g} clamp"
            if b.amax_clamp is None
            else f"amax clamped to {b.amax_clamp:g} first (DeepSeek)"
        )
    if b.exp_range != a.exp_range:
        out.append(
            f"scale exponents in [{b.exp_range[0]}, {b.exp_range[1]}] instead of [{a.exp_range[0]}, {a.exp_range[1]}]"
        )
    if b.apply is not a.apply:
        out.append(f"elements scaled as {APPLY_WORDS[b.apply]} instead of {APPLY_WORDS[a.apply].split(' (')[0]}")
    out += [f"elements: {w}" for w in _rules_diff(ar, br, spec)]
    return out


def _as_scheme(v: Variant, base: Scheme) -> tuple[Scheme, Rules]:
    g = dict(v.fields)
    r = Rules(**{f: g[f] for f in _RULE_FIELDS})
    return replace(
        base, scale_rule=g["scale_rule"], amax_clamp=g["amax_clamp"], exp_range=g["exp_range"], apply=g["apply"]
    ), r


def _diff_words(a: Variant, b: Variant, base: Scheme | None, case: Case | None = None) -> str:
    """How b differs from a, in words; a quirk variant says which of its quirks fire in `case`."""
    if base is None:
        ra, rb = (Rules(**{f: v.get(f) for f in _RULE_FIELDS}) for v in (a, b))
        return "; ".join(_rules_diff(ra, rb, a.spec)) or "same rules"
    (sa, ra), (sb, rb) = _as_scheme(a, base), _as_scheme(b, base)
    words = _block_diff(sb, sa, rb, ra, a.spec)
    if b.explain is not None and case is not None:
        words.append(b.explain(case))
    return "; ".join(words) or "same scheme"


def _distance(a: Variant, b: Variant) -> int:
    return sum(x != y for x, y in zip(a.fields, b.fields))


# ---------------------------------------------------------------- scoring


def _group_cases(outputs: Outputs) -> dict[str, list[Case]]:
    groups: dict[str, list[Case]] = {}
    for name in outputs.codes:
        try:
            c = find_case(name)
        except Exception:  # not a case of ours: scored only if its inputs came along, else left out
            try:
                c = given_case(name, outputs.inputs[name])
            except Exception:
                continue
        groups.setdefault(c.group, []).append(c)
    return groups


def _score(cases, outputs, variants):
    """Per variant: per case mismatch count, and the compare results."""
    table = []
    for v in variants:
        row = []
        for c in cases:
            row.append(compare(c, v.make(c), v.spec, outputs.codes[c.name], outputs.scales.get(c.name)))
        table.append(row)
    return table


def identify_group(cases: list[Case], outputs: Outputs) -> GroupResult:
    first = cases[0]
    if first.kind is CaseKind.ELEMENT:
        base = None
        variants = element_variants(first.fmt)
    else:
        base = first.preset.scheme(first.role)
        variants = block_variants(base, first.role)
    for c in cases:  # shape and dtype errors surface once, before scoring
        as_codes(outputs.codes[c.name], c.name)
    table = _score(cases, outputs, variants)

    def key(i):
        row = table[i]
        dist = _distance(variants[i], variants[0]) if base is not None else 0
        return (-sum(r.mismatches == 0 for r in row), sum(r.mismatches for r in row), dist, i)

    order = sorted((i for i in range(len(variants)) if variants[i].explain is None), key=key)  # rules only
    bi = order[0]
    best, row = variants[bi], table[bi]
    devs = []
    for j, (c, r) in enumerate(zip(cases, row)):
        if r.mismatches == 0:
            continue
        fixes = [i for i in range(len(variants)) if table[i][j].mismatches == 0]
        expl = None
        if fixes:
            k = min(fixes, key=lambda i: (_distance(variants[i], best), i))
            expl = _diff_words(best, variants[k], base, c)
        devs.append(
            Deviation(
                c.name,
                c.name.split("/", 3)[-1] if c.kind is CaseKind.BLOCK else c.scenario,
                r.mismatches,
                r.first,
                expl,
            )
        )
    vs = None
    if base is not None:
        vs = _diff_words(variants[0], best, base)
        vs = None if vs == "same scheme" else vs
    runner = next((variants[i].label for i in order[1:] if variants[i].label != best.label), None)
    return GroupResult(first.group, first.kind, best.label, len(cases) - len(devs), len(cases), tuple(devs), vs, runner)


@dataclass(frozen=True)
class IdentifyReport:
    groups: tuple[GroupResult, ...]
    unknown: tuple[str, ...]  # output keys that name no case


def identify(outputs_path) -> IdentifyReport:
    """Score the outputs at `outputs_path` (a bundle keyed by case name) against every variant."""
    from .check import NothingToCheckError

    outputs = outputs_path if isinstance(outputs_path, Outputs) else Outputs.read(outputs_path)
    groups = _group_cases(outputs)
    known = {c.name for cs in groups.values() for c in cs}
    unknown = tuple(sorted(k for k in outputs.codes if k not in known)) + outputs.other
    if not groups:
        raise NothingToCheckError(
            "the outputs name no known case; keys must be '<case>/codes' with case names "
            "from an export's manifest.json (e.g. element/float8_e4m3fn/codes/codes), "
            "or carry '<case>/inputs' for cases of your own (block/<preset>/<role>/<label>)"
        )
    order = sorted(groups, key=lambda g: (groups[g][0].kind is CaseKind.BLOCK, g))
    return IdentifyReport(tuple(identify_group(groups[g], outputs) for g in order), unknown)
