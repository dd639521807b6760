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
        return Scheme.build(
            element, rule, "1x32", storage="e8m0", profile=profile, name=f"{name}/{role}", description=desc, **kw
        )

    return Preset(name, one("weight"), one("activation"), desc)


def _nvfp4(name, rule, short, desc):
    def one(role):
        return Scheme.build(
            "float4_e2m1fn",
            rule,
            "1x16",
            storage="e4m3_tensor",
            profile="ocp-mx",
            name=f"{name}/{role}",
            description=short,
        )

    return Preset(name, one("weight"), one("activation"), desc)


def _build() -> dict[str, Preset]:
    hif8_desc = (
        "HiF8 elements (ties away, overflow to Inf) with power-of-two float32 scales: per output "
        "channel (row) for weights, per tensor for activations; 2^ceil(log2(amax / 2^15)) (RCEIL). "
        "How Ascend AMCT picks the exponent is UNVERIFIED; this never overflows."
    )
    q8_desc = (
        "GGUF / ggml Q8_0: int8 integers in 1x32 blocks along the last axis, d = fp32(amax / 127) stored "
        "as fp16; codes roundf(x * fp32(1/d)) from the unrounded d, ties away (ggml quantize_row_q8_0_ref); "
        "value code * fp16(d)."
    )
    presets = [
        _ds(
            "deepseek-v3",
            "v3_float",
            "DeepSeek-V3: E4M3, fp32 scale amax/448 (amax clamped to 1e-4), x / s; 128x128 weights, "
            "1x128 activations along the last axis; element RNE, overflow to NaN (ml_dtypes).",
        ),
        _ds(
            "deepseek-v3.1",
            "ue8m0",
            "DeepSeek-V3.1 UE8M0 FP8: E4M3, power-of-two scale 2^ceil(log2(max(amax,1e-4)/448)) from the "
            "float32 bits (DeepGEMM ceil_to_ue8m0, exponent clamped to [-126, 127]); scales stored as "
            "float32 as in the checkpoints (use storage='e8m0' for one byte).",
            exp_range=(-126, 127),
        ),
        _mx(
            "mxfp8",
            "float8_e4m3fn",
            "OCP MXFP8: E4M3 elements, 1x32 blocks, E8M0 scale, FLOOR rule, elements clamped to +-448.",
        ),
        _mx("mxfp6_e2m3", "float6_e2m3fn", "OCP MXFP6 E2M3 (max 7.5), 1x32, E8M0, FLOOR, clamped."),
        _mx("mxfp6_e3m2", "float6_e3m2fn", "OCP MXFP6 E3M2 (max 28), 1x32, E8M0, FLOOR, clamped."),
        _mx("mxfp4", "float4_e2m1fn", "OCP MXFP4 E2M1 (max 6), 1x32, E8M0, FLOOR, clamped."),
        _mx(
            "ct-mxfp4",
            "float4_e2m1fn",
            "compressed-tensors / llm-compressor MXFP4: E2M1, 1x32, E8M0 from its "
            "own rule (amax rounded at 1 mantissa bit, ties up, then floor; rules.ct_mx), elements x / s, "
            "clamped, RNE.",
            rule="ct_mx",
        ),
        _mx(
            "ct-mxfp8",
            "float8_e4m3fn",
            "compressed-tensors / llm-compressor MXFP8: E4M3, 1x32, E8M0 from its "
            "own rule (amax rounded at E2M1's 1 mantissa bit, so it never clips; rules.ct_mx).",
            rule="ct_mx",
        ),
        _mx(
            "triton-mxfp4",
            "float4_e2m1fn",
            "triton_kernels' MXFP4 (downcast_to_mxfp, ROUND_UP), what transformers' "
            "gpt-oss integration and vLLM quantize BF16 experts with: E2M1, 1x32, E8M0 2^ceil(log2(amax / 6)) on the "
            "float32 bits (rules.ue8m0_bitwise, no clamp), elements x * (1 / s) rounded to nearest, ties away.",
            rule="ue8m0",
            rounding="away",
            apply="reciprocal",
        ),
        _mx("mxint8", "int8", "OCP MXINT8: int8 code/64, 1x32, E8M0, FLOOR (emax 0), clamped to +-127/64."),
        _nvfp4(
            "nvfp4",
            "nvfp4",
            "NVFP4",
            "NVIDIA NVFP4: E2M1 elements, E4M3 scale per 16 along the last axis, fp32 "
            "per-tensor scale amax/(448*6) (torchao 0.18 formulas); elements clamped to +-6.",
        ),
        _nvfp4(
            "ct-nvfp4",
            "ct_nvfp4",
            "compressed-tensors NVFP4",
            "compressed-tensors / llm-compressor NVFP4A16: "
            "E2M1, E4M3 scale per 16, a float32 global scale g = 2688 / amax in the weight's dtype stored as a "
            "DIVISOR (rules.ct_nvfp4); q/k/v and gate/up share one amax when written to a checkpoint.",
        ),
        Preset(
            "q8_0",
            *(
                Scheme.build(
                    "qint8",
                    "v3_float",
                    "1x32",
                    storage="float16",
                    rounding="away",
                    apply="reciprocal_unrounded",
                    name=f"q8_0/{role}",
                    description=q8_desc,
                )
                for role in ("weight", "activation")
            ),
            q8_desc,
        ),
        Preset(
            "hif8",
            Scheme.build("hifloat8", "rceil", "row", storage="float32", name="hif8/weight", description=hif8_desc),
            Scheme.build(
                "hifloat8", "rceil", "tensor", storage="float32", name="hif8/activation", description=hif8_desc
            ),
            hif8_desc,
        ),
        _mx(
            "fp4_e1m2",
            "float4_e1m2",
            "Ascend 950 FP4 E1M2 (max 1.75) in 1x32 blocks with E8M0 scales, "
            "FLOOR, saturating (block size and rule UNVERIFIED against CANN).",
            profile="default",
            overflow="saturate",
        ),
    ]
    return {p.name: p for p in presets + _ascend()}


def _ascend() -> list[Preset]:
    """msModelSlim's rules per element (shared/research/ascend-layout.md, issue 24), and fp8port's
    exact-bf16 int8 variant. Int scales are in INT-element units: msModelSlim's weight_scale is
    scale * 2^-mbits (int8: / 64, int4: / 4)."""

    def both(name, element, rule, block, desc, profile="msmodelslim", **kw):
        def one(role):
            return Scheme.build(element, rule, block, name=f"{name}/{role}", profile=profile, description=desc, **kw)

        return Preset(name, one("weight"), one("activation"), desc)

    return [
        both(
            "msmodelslim-int8",
            "int8",
            "msmodelslim_int",
            "row",
            "msModelSlim int8 per output channel (W8A16, W8A8_DYNAMIC weights; per-token activations): scale "
            "bf16(amax/127) floored at fp32 eps, elements bf16(x/s) rounded half to even, clamped to "
            "[-128, 127].",
            apply="bf16_divide",
        ),
        both(
            "msmodelslim-int4",
            "int4",
            "msmodelslim_int",
            "row",
            "msModelSlim int4 per output channel (W4A8_DYNAMIC weights): scale bf16(amax/7) floored at fp32 "
            "eps, elements bf16(x/s) rounded half to even, clamped to [-8, 7].",
            apply="bf16_divide",
        ),
        both(
            "msmodelslim-mxfp8",
            "float8_e4m3fn",
            "msmodelslim_mx",
            "1x32",
            "msModelSlim MXFP8 (W8A8_MXFP8): E4M3 in 1x32 blocks, E8M0 scale 2^(floor(bf16 log2 amax) - 8), "
            "elements rounded half away from zero, clamped to +-448.",
            storage="e8m0",
            apply="msmodelslim_mxfp8",
        ),
        both(
            "msmodelslim-mxfp4",
            "float4_e2m1fn",
            "msmodelslim_mxfp4",
            "1x32",
            "msModelSlim MXFP4 (W4A4_MXFP4, W4A8_MXFP weights): E2M1 in 1x32 blocks, E8M0 scale "
            "2^(floor(bf16 log2(amax/0.875 + 9.6e-7)) - 2), elements rounded half away from zero, clamped "
            "to +-6.",
            storage="e8m0",
            apply="msmodelslim_mxfp4",
        ),
        both(
            "msmodelslim-fp8",
            "float8_e4m3fn",
            "msmodelslim_fp8",
            "row",
            "msModelSlim FP8 per output channel (WFP8AFP8_DYNAMIC, read only): scale bf16(amax/448), "
            "elements bf16(x/s) cast to E4M3 by torch (round to nearest even, saturating).",
            profile="torch",
            apply="bf16_divide",
        ),
        both(
            "ascend-int8-bf16ceil",
            "int8",
            "bf16_ceil",
            "row",
            "fp8port's exact-bf16 int8 per output channel: scale amax/127 rounded up to bf16 (the loaders "
            "hold it in bf16; nothing clips), elements x/s in float32 rounded half to even.",
            profile=None,
        ),
    ]


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
