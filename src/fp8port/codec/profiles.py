"""Device profiles: one name for a whole bundle of edge behaviour ("behave like X").

A profile resolves, per format, to `Rules`: the rounding, what overflow and +-Inf
become, which code NaN gets, and the few quirks of unsigned, zero-less formats
(E8M0). Every rule here was measured against the named library where it exists
(tests/codec compare bit for bit); rules of hardware profiles come from vendor
documentation and are marked unverified in the README table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from ..errors import ProfileError, UnknownNameError
from ..formats import FORMATS, FormatSpec, get_format
from .policy import Overflow, Rounding

_RNE, _AWAY, _ZERO = Rounding.RNE, Rounding.AWAY, Rounding.ZERO
_SAT, _NONFIN = Overflow.SATURATE, Overflow.NONFINITE


class ZeroLess(enum.Enum):
    """What a format without a zero (E8M0) gives for an input it cannot hold."""

    NAN = "nan"  # the NaN code
    MIN = "min"  # the smallest value, 2^-127
    ABS = "abs"  # (negative inputs only) the sign is dropped


@dataclass(frozen=True)
class Rules:
    """Edge behaviour of one format under one profile (all fields resolved)."""

    rounding: Rounding = _RNE
    overflow: Overflow = _NONFIN  # finite values beyond max
    inf: Overflow = _NONFIN  # +-Inf inputs (SATURATE: +-max)
    nan_code: int = 0  # code of +NaN
    nan_signed: bool = True  # -NaN gives nan_code ^ sign bit
    via_float32: bool = False  # float64 input is first rounded to float32, as the library does
    # Formats without zero (E8M0) only:
    zero: ZeroLess = ZeroLess.NAN  # +-0 input
    underflow: ZeroLess = ZeroLess.MIN  # non-zero input that rounds to 0
    negative: ZeroLess = ZeroLess.NAN  # negative input into an unsigned format
    f32_subnormal_ceil: bool = False  # float32-subnormal inputs round up (ml_dtypes, torch E8M0)


def natural_nan(spec: FormatSpec) -> int:
    """The canonical +NaN code: the quiet NaN with only the top mantissa bit (E5M2 0x7E),
    the all-ones code (E4M3, E8M0), 0x80 (fnuz, HiF8); 0 for formats without NaN."""
    if not spec.nan_codes:
        return 0
    if spec.kind.value == "float" and spec.nan.value == "ieee":
        return ((1 << spec.ebits) - 1) << spec.mbits | 1 << (spec.mbits - 1)
    return spec.nan_codes[0]


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    base: dict = field(default_factory=dict)  # Rules fields for every covered format
    per_format: dict = field(default_factory=dict)  # format name -> Rules fields
    formats: frozenset | None = None  # None: every format
    verified: str = "measured"  # how the rules were established

    def covers(self, spec: FormatSpec) -> bool:
        return self.formats is None or spec.name in self.formats

    def rules(self, fmt) -> Rules:
        spec = get_format(fmt)
        if not self.covers(spec):
            raise ProfileError(
                f"profile {self.name!r} does not define {spec.name}; it covers: " + ", ".join(sorted(self.formats))
            )
        kw = {"nan_code": natural_nan(spec), **self.base, **self.per_format.get(spec.name, {})}
        return Rules(**kw)


def _ml_names():
    return frozenset(s.name for s in FORMATS.values() if s.ml_dtypes)


def _en_names():
    return frozenset(s.name for s in FORMATS.values() if s.en_dtypes)


_MXFP = ("float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn", "float4_e1m2")

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "default",
            "Exact IEEE semantics: round to nearest even, overflow to Inf/NaN (saturate where the "
            "format has neither), float64 inputs rounded once. HiF8 rounds ties away (its design); "
            "INT8 and QINT8 saturate.",
            per_format={
                "float6_e2m3fn": {"nan_code": 0x20},
                "float6_e3m2fn": {"nan_code": 0x20},
                "float4_e2m1fn": {"nan_code": 0x8},
                "float4_e1m2": {"nan_code": 0x8},
                "hifloat8": {"rounding": _AWAY, "nan_signed": False},
                "float8_e4m3fnuz": {"nan_signed": False},
                "float8_e5m2fnuz": {"nan_signed": False},
                "float8_e8m0fnu": {"nan_signed": False},
                "int8": {"overflow": _SAT, "inf": _SAT, "nan_signed": False},
                "int4": {"overflow": _SAT, "inf": _SAT, "nan_signed": False},
                "qint8": {"overflow": _SAT, "inf": _SAT, "nan_signed": False},
            },
        ),
        Profile(
            "ml_dtypes",
            "ml_dtypes 0.6 `astype`: RNE, never saturates (E4M3 overflow and Inf give NaN), NaN into "
            "FP4/FP6 gives -0 (sign flipped), E8M0: 0 and negatives give NaN, float32 subnormals round "
            "up; float64 is cast through float32.",
            base={"via_float32": True},
            per_format={
                "float6_e2m3fn": {"nan_code": 0x20},
                "float6_e3m2fn": {"nan_code": 0x20},
                "float4_e2m1fn": {"nan_code": 0x8},
                "float8_e4m3fnuz": {"nan_signed": False},
                "float8_e5m2fnuz": {"nan_signed": False},
                "float8_e8m0fnu": {"nan_signed": False, "f32_subnormal_ceil": True},
            },
            formats=_ml_names(),
        ),
        Profile(
            "torch",
            "PyTorch 2.13 eager `.to(dtype)` on CPU: E4M3 saturates finite overflow and +-Inf, E5M2 "
            "overflows to Inf, NaN is 0x7F/0xFF; E8M0 ignores the sign, maps 0 to 2^-127, rounds float32 "
            "subnormals up. Not valid for torch <= 2.12.",
            base={"via_float32": True},
            per_format={
                "float8_e4m3fn": {"overflow": _SAT, "inf": _SAT},
                "float8_e5m2": {"nan_code": 0x7F},
                "float8_e4m3fnuz": {"nan_signed": False},
                "float8_e5m2fnuz": {"nan_signed": False},
                "float8_e8m0fnu": {
                    "nan_signed": False,
                    "zero": ZeroLess.MIN,
                    "negative": ZeroLess.ABS,
                    "f32_subnormal_ceil": True,
                },
            },
            formats=frozenset({"float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"}),
        ),
        Profile(
            "en_dtypes",
            "en_dtypes 0.0.4 numpy casts: HiF8 ties away and overflows to Inf; FP4/FP6/E1M2 round to "
            "nearest even, saturate, NaN gives +0; E8M0 truncates, saturates finite overflow, gives NaN "
            "below 2^-127.",
            base={"via_float32": True, "nan_code": 0},
            per_format={
                "hifloat8": {"rounding": _AWAY, "nan_code": 0x80, "nan_signed": False},
                "float8_e8m0fnu": {
                    "rounding": _ZERO,
                    "overflow": _SAT,
                    "nan_code": 0xFF,
                    "nan_signed": False,
                    "underflow": ZeroLess.NAN,
                },
            },
            formats=_en_names(),
        ),
        Profile(
            "ocp-mx",
            "OCP MX v1.0 element conversion: RNE, finite overflow clamped to +-max (the spec's clamp), "
            "Inf kept where the format has it (else NaN, else max); NaN where the format has one, else "
            "+0 (the block's 0xFF scale carries the NaN).",
            base={"overflow": _SAT},
            per_format={"float8_e5m2": {"nan_code": 0x7F}, "int8": {"inf": _SAT}},
            formats=frozenset({"float8_e4m3fn", "float8_e5m2", *_MXFP[:3], "int8"}),
            verified="specification as cited by torchao and microxcaling",
        ),
        Profile(
            "triton-hopper",
            "Compiled Triton on sm_90 (PTX cvt.rn.satfinite): RNE, finite overflow and +-Inf saturate "
            "to +-max, NaN gives 0x7F.",
            base={"overflow": _SAT, "inf": _SAT, "nan_code": 0x7F},
            formats=frozenset({"float8_e4m3fn", "float8_e5m2"}),
            verified="PTX ISA description; bytes checked on a GPU only where the README says so",
        ),
        Profile(
            "msmodelslim",
            "msModelSlim 26.1.0 (AscendV1 writer): MX elements (E4M3, E2M1) round half away from zero "
            "(sign * floor(|a| + 0.5)) and clamp to +-max, +-Inf saturating (torch's E4M3 cast); int "
            "elements round half to even (torch.round) and clamp to the int range.",
            base={"rounding": _AWAY, "overflow": _SAT, "inf": _SAT},
            per_format={
                "int8": {"rounding": _RNE, "nan_signed": False},
                "int4": {"rounding": _RNE, "nan_signed": False},
            },
            formats=frozenset({"float8_e4m3fn", "float4_e2m1fn", "int8", "int4"}),
            verified="read from msmodelslim ir/api/impl/mx_quantization.py and int_quantization.py; bit-exact "
            "on every bf16 input (tests/peers/test_msmodelslim.py)",
        ),
        Profile(
            "ascend-sat",
            "Ascend 950 Cast with saturation: HiF8 ties away (CAST_ROUND), others RNE (CAST_RINT); "
            "overflow and +-Inf saturate; NaN stays NaN where the format has one, else +0.",
            base={"overflow": _SAT, "inf": _SAT},
            per_format={"hifloat8": {"rounding": _AWAY, "nan_signed": False}, "float8_e5m2": {"nan_code": 0x7F}},
            formats=frozenset({"hifloat8", "float8_e4m3fn", "float8_e5m2", "float4_e2m1fn", "float4_e1m2"}),
            verified="CANN Ascend C Cast API (SatMode); unverified on hardware",
        ),
        Profile(
            "ascend-nosat",
            "Ascend 950 Cast with SatMode::NO_SAT: as ascend-sat but overflow and +-Inf give Inf "
            "(HiF8, E5M2) or NaN (E4M3); FP4 formats still saturate (no Inf/NaN codes).",
            per_format={"hifloat8": {"rounding": _AWAY, "nan_signed": False}, "float8_e5m2": {"nan_code": 0x7F}},
            formats=frozenset({"hifloat8", "float8_e4m3fn", "float8_e5m2", "float4_e2m1fn", "float4_e1m2"}),
            verified="CANN Ascend C Cast API (SatMode); unverified on hardware",
        ),
    )
}


def get_profile(profile) -> Profile:
    if profile is None:
        return PROFILES["default"]
    if isinstance(profile, Profile):
        return profile
    key = str(profile).strip().lower().replace("-", "_")
    for name, p in PROFILES.items():
        if key == name.replace("-", "_"):
            return p
    raise UnknownNameError("profile", profile, PROFILES)


def resolve(fmt, profile=None, rounding=None, overflow=None) -> tuple[FormatSpec, Rules]:
    """Parse the user's names once into a spec and fully resolved rules."""
    spec = get_format(fmt)
    rules = get_profile(profile).rules(spec)
    if rounding is not None:
        rules = replace(rules, rounding=Rounding.parse(rounding))
    if overflow is not None:
        ov = Overflow.parse(overflow)
        rules = replace(rules, overflow=ov, inf=ov)
    return spec, rules
