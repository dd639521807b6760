"""Named presets: one scheme per role (weight / activation), parsed once from names here."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnknownNameError
from ..names import NamedEnum
from .scheme import Scheme


class Role(NamedEnum):
    __label__ = "role"
    __aliases__ = {"weight": ("w", "weights"), "activation": ("a", "act", "activations")}
    WEIGHT = "weight"
    ACTIVATION = "activation"


@dataclass(frozen=True)
class Preset:
    name: str
    weight: Scheme
    activation: Scheme
    description: str

    def scheme(self, role) -> Scheme:
        return self.weight if Role.parse(role) is Role.WEIGHT else self.activation


def _ds(name, rule, desc, **kw):
    common = dict(storage="float32", amax_clamp=1e-4, **kw)
    return Preset(
        name,
        Scheme.build("float8_e4m3fn", rule, "128x128", name=f"{name}/weight", description=desc, **common),
        Scheme.build("float8_e4m3fn", rule, "1x128", name=f"{name}/activation", description=desc, **common),
        desc,
    )


def _mx(name, element, desc, rule="floor", profile="ocp-mx", **kw):
    def one(role):
        return Scheme.build(element, rule, "1x32", storage="e8m0", profile=profile, name=f"{name}/{role}",
                            description=desc, **kw)

    return Preset(name, one("weight"), one("activation"), desc)


def _build() -> dict[str, Preset]:
    hif8_desc = ("HiF8 elements (ties away, overflow to Inf) with power-of-two float32 scales: per output "
                 "channel (row) for weights, per tensor for activations; 2^ceil(log2(amax / 2^15)) (RCEIL). "
                 "How Ascend AMCT picks the exponent is UNVERIFIED; this never overflows.")
    presets = [
        _ds("deepseek-v3", "v3_float",
            "DeepSeek-V3: E4M3, fp32 scale amax/448 (amax clamped to 1e-4), x / s; 128x128 weights, "
            "1x128 activations along the last axis; element RNE, overflow to NaN (ml_dtypes)."),
        _ds("deepseek-v3.1", "ue8m0",
            "DeepSeek-V3.1 UE8M0 FP8: E4M3, power-of-two scale 2^ceil(log2(max(amax,1e-4)/448)) from the "
            "float32 bits (DeepGEMM ceil_to_ue8m0, exponent clamped to [-126, 127]); scales stored as "
            "float32 as in the checkpoints (use storage='e8m0' for one byte).",
            exp_range=(-126, 127)),
        _mx("mxfp8", "float8_e4m3fn", "OCP MXFP8: E4M3 elements, 1x32 blocks, E8M0 scale, FLOOR rule, "
            "elements clamped to +-448."),
        _mx("mxfp6_e2m3", "float6_e2m3fn", "OCP MXFP6 E2M3 (max 7.5), 1x32, E8M0, FLOOR, clamped."),
        _mx("mxfp6_e3m2", "float6_e3m2fn", "OCP MXFP6 E3M2 (max 28), 1x32, E8M0, FLOOR, clamped."),
        _mx("mxfp4", "float4_e2m1fn", "OCP MXFP4 E2M1 (max 6), 1x32, E8M0, FLOOR, clamped."),
        _mx("ct-mxfp4", "float4_e2m1fn", "compressed-tensors / llm-compressor MXFP4: E2M1, 1x32, E8M0 from its "
            "own rule (amax rounded at 1 mantissa bit, ties up, then floor; rules.ct_mx), elements x / s, "
            "clamped, RNE.", rule="ct_mx"),
        _mx("ct-mxfp8", "float8_e4m3fn", "compressed-tensors / llm-compressor MXFP8: E4M3, 1x32, E8M0 from its "
            "own rule (amax rounded at E2M1's 1 mantissa bit, so it never clips; rules.ct_mx).", rule="ct_mx"),
        _mx("mxint8", "int8", "OCP MXINT8: int8 code/64, 1x32, E8M0, FLOOR (emax 0), clamped to +-127/64."),
        Preset("nvfp4",
               Scheme.build("float4_e2m1fn", "nvfp4", "1x16", storage="e4m3_tensor", profile="ocp-mx",
                            name="nvfp4/weight", description="NVFP4"),
               Scheme.build("float4_e2m1fn", "nvfp4", "1x16", storage="e4m3_tensor", profile="ocp-mx",
                            name="nvfp4/activation", description="NVFP4"),
               "NVIDIA NVFP4: E2M1 elements, E4M3 scale per 16 along the last axis, fp32 per-tensor scale "
               "amax/(448*6) (torchao 0.18 formulas); elements clamped to +-6."),
        Preset("hif8",
               Scheme.build("hifloat8", "rceil", "row", storage="float32", name="hif8/weight",
                            description=hif8_desc),
               Scheme.build("hifloat8", "rceil", "tensor", storage="float32", name="hif8/activation",
                            description=hif8_desc),
               hif8_desc),
        _mx("fp4_e1m2", "float4_e1m2", "Ascend 950 FP4 E1M2 (max 1.75) in 1x32 blocks with E8M0 scales, "
            "FLOOR, saturating (block size and rule UNVERIFIED against CANN).", profile="default",
            overflow="saturate"),
    ]
    return {p.name: p for p in presets}


PRESETS: dict[str, Preset] = _build()


def get_preset(name) -> Preset:
    if isinstance(name, Preset):
        return name
    key = str(name).strip().lower().replace("_", "-")
    for p in PRESETS.values():
        if key == p.name.replace("_", "-"):
            return p
    raise UnknownNameError("preset", name, PRESETS)


def scheme_from_description(d: dict) -> Scheme:
    """The scheme `Scheme.describe()` gave: a preset's own (with its profile's element rules) when the
    description is one of theirs, else rebuilt from the description (default-profile rules)."""
    for p in PRESETS.values():
        for s in (p.weight, p.activation):
            if s.describe() == d:
                return s
    return Scheme.from_description(d)
