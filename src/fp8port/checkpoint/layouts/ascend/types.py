"""AscendV1's quant types and the tensors each one stores (shared/research/ascend-layout.md §1-§3)."""

from __future__ import annotations

import math

from ....errors import ConversionError, UnknownNameError
from ....names import NamedEnum
from ....quant import Apply, ScaleRule, Scheme, get_preset

MX_GROUP = 32


class AscendType(NamedEnum):
    """Per-tensor quant types of the description file (§1.2), low to high priority."""

    __label__ = "AscendV1 quant type"
    FLOAT = "FLOAT"
    W16A16S = "W16A16S"
    W8A16 = "W8A16"
    W8A8_DYNAMIC = "W8A8_DYNAMIC"
    W8A8_MIX = "W8A8_MIX"
    W8A8 = "W8A8"
    WFP8AFP8_DYNAMIC = "WFP8AFP8_DYNAMIC"
    W8A8_MXFP8 = "W8A8_MXFP8"
    W4A8_MXFP = "W4A8_MXFP"
    W4A4_DYNAMIC = "W4A4_DYNAMIC"
    W4A4_MXFP4 = "W4A4_MXFP4"
    W4A4_MXFP4_DUALSCALE = "W4A4_MXFP4_DUALSCALE"
    W4A4_MXFP4_SVD = "W4A4_MXFP4_SVD"
    W4A8_DYNAMIC = "W4A8_DYNAMIC"  # not in msModelSlim's priority list (§1.2)

    @classmethod
    def writable(cls, value) -> AscendType:
        """A type `convert --layout ascend --preset TYPE` writes (errors list the writable ones)."""
        try:
            t = cls.parse(value)
        except UnknownNameError:
            raise UnknownNameError(cls.__label__, value, [m.value for m in WRITABLE]) from None
        if t is cls.WFP8AFP8_DYNAMIC:
            raise ConversionError(
                "WFP8AFP8_DYNAMIC is not written: msModelSlim names it so, but vLLM-Ascend "
                "registers W8A8FP8_DYNAMIC and SGLang neither, so no loader would accept "
                "the file (ascend-layout.md §2.5); use W8A8_MXFP8 on Ascend 950"
            )
        if t not in WRITABLE:
            raise ConversionError(
                f"{t.value} is an AscendV1 type fp8port reads but does not write (it needs "
                f"calibration or extra tensors); writable: {', '.join(m.value for m in WRITABLE)}"
            )
        return t

    @property
    def mx(self) -> bool:
        return self in (AscendType.W8A8_MXFP8, AscendType.W4A8_MXFP, AscendType.W4A4_MXFP4)

    @property
    def fp4(self) -> bool:
        return self in (AscendType.W4A8_MXFP, AscendType.W4A4_MXFP4)

    @property
    def per_channel(self) -> bool:
        """One float32 scale per output row (int8, int4 or FP8 codes)."""
        return self in (
            AscendType.W8A8_DYNAMIC,
            AscendType.W8A16,
            AscendType.W8A8_MIX,
            AscendType.W8A8,
            AscendType.WFP8AFP8_DYNAMIC,
            AscendType.W4A8_DYNAMIC,
        )

    @property
    def scheme(self) -> Scheme:
        """What decodes a stored weight of this type: the OCP MX presets, or int8 / int4 / E4M3 codes with a
        float32 scale per output row (INT elements count in steps of 2^-mbits: the stored weight_scale
        times 2^mbits)."""
        if self.mx:
            return get_preset(MX_PRESET[self]).weight
        element = {AscendType.W4A8_DYNAMIC: "int4", AscendType.WFP8AFP8_DYNAMIC: "float8_e4m3fn"}.get(self, "int8")
        return Scheme.build(element, "v3_float", "row", storage="float32", name=f"ascend/{self.value}")

    @property
    def activation(self) -> Scheme | None:
        """The activation scheme of a w8a8 run (None where it is no fp8port scheme: int8 per token)."""
        return get_preset(ACTIVATION_PRESET[self]).activation if self in ACTIVATION_PRESET else None


PRIORITY = list(AscendType)[:-1]
WRITABLE = (
    AscendType.W8A8_MXFP8,
    AscendType.W4A8_MXFP,
    AscendType.W4A4_MXFP4,
    AscendType.W8A8_DYNAMIC,
    AscendType.W8A16,
    AscendType.W8A8,
    AscendType.W4A8_DYNAMIC,
)
# What msModelSlim 26.1.0 quantizes each type's weights with (its `minmax` weight quantizers): the default.
DEFAULT_PRESET = {
    AscendType.W8A8_MXFP8: "msmodelslim-mxfp8",
    AscendType.W4A8_MXFP: "msmodelslim-mxfp4",
    AscendType.W4A4_MXFP4: "msmodelslim-mxfp4",
    AscendType.W8A8_DYNAMIC: "msmodelslim-int8",
    AscendType.W8A16: "msmodelslim-int8",
    AscendType.W8A8: "msmodelslim-int8",
    AscendType.W4A8_DYNAMIC: "msmodelslim-int4",
}
MX_PRESET = {AscendType.W8A8_MXFP8: "mxfp8", AscendType.W4A8_MXFP: "mxfp4", AscendType.W4A4_MXFP4: "mxfp4"}
ACTIVATION_PRESET = {AscendType.W8A8_MXFP8: "mxfp8", AscendType.W4A8_MXFP: "mxfp8", AscendType.W4A4_MXFP4: "mxfp4"}

# Scheme registries of the loaders (§3.1 vLLM-Ascend @182b75e, §3.2 SGLang modelslim.py).
LOADERS = {
    "vllm-ascend": {
        "linear": {
            "W8A8",
            "W8A8_DYNAMIC",
            "W8A8_MIX",
            "W8A16",
            "W8A8_MXFP8",
            "W4A8_MXFP",
            "W4A4_MXFP4",
            "W4A4_DYNAMIC",
            "W4A4_FLATQUANT_DYNAMIC",
            "W4A4_MXFP4_FLATQUANT",
            "W8A8FP8_DYNAMIC",
        },
        "moe": {
            "W8A8_DYNAMIC",
            "W8A8_MXFP8",
            "W4A8_DYNAMIC",
            "W4A8_MXFP",
            "W4A4_MXFP4",
            "W4A16",
            "W4A16_MXFP4",
            "W8A8FP8_DYNAMIC",
        },
    },
    "sglang": {
        "linear": {"W4A4_DYNAMIC", "W8A8", "W8A8_DYNAMIC", "W8A8_MXFP8", "W4A8_MXFP", "W4A4_MXFP4"},
        "moe": {"W4A4_DYNAMIC", "W4A8_DYNAMIC", "W8A8_DYNAMIC", "W8A8_MXFP8"},
    },
}

COMPANIONS = (
    "weight_scale",
    "weight_offset",
    "scale_bias",
    "input_scale",
    "input_offset",
    "deq_scale",
    "quant_bias",
    "weight_dual_scale",
)


def target(value, model_dtype: str = "BF16") -> tuple[AscendType, Scheme]:
    """`--preset TYPE[:PRESET]`: the type written and the scheme its weights are quantized with.

    Without PRESET, msModelSlim's rule for the type (DEFAULT_PRESET), in float32 arithmetic on a float32
    model as msModelSlim computes there; PRESET (e.g. `W8A8_MXFP8:mxfp8`) must store what the type stores.
    """
    name, _, preset = str(value).partition(":")
    t = AscendType.writable(name)
    if not preset:
        s = get_preset(DEFAULT_PRESET[t]).weight
        return t, (float32_twin(s) if model_dtype == "F32" else s)
    s, want = get_preset(preset).weight, t.scheme
    if (s.element, s.block.kind, s.block.size, s.storage) != (
        want.element,
        want.block.kind,
        want.block.size,
        want.storage,
    ):
        raise ConversionError(
            f"--preset {value}: {preset} gives {s.element.name} in {s.block} blocks with "
            f"{s.storage.value} scales, but {t.value} stores {want.element.name} in {want.block} "
            f"blocks with {want.storage.value} scales"
        )
    return t, s


def float32_twin(s: Scheme) -> Scheme:
    """An msmodelslim-* scheme as msModelSlim runs on a float32 model (the rules' `_f32` twins, x / s in
    float32 where it divides in bf16 on a bf16 model)."""
    apply = Apply.DIVIDE if s.apply is Apply.BF16_DIVIDE else s.apply
    return s.with_(scale_rule=ScaleRule.parse(s.scale_rule.value + "_f32"), apply=apply, name=f"{s.name}@float32")


def entries(t: AscendType, name: str, shape, deq_int64: bool = False):
    """(tensor name, safetensors dtype, shape) written for weight `name` [N, K] in type t, in msModelSlim's
    order (its AscendV1Saver `on_*` methods)."""
    n, k = shape
    base = name[: -len(".weight")]
    if t is AscendType.W8A8_MXFP8:
        return [(name, "F8_E4M3", (n, k)), (f"{base}.weight_scale", "U8", (n, math.ceil(k / MX_GROUP)))]
    if t.fp4:
        return [(name, "U8", (n, k // 2)), (f"{base}.weight_scale", "U8", (n, math.ceil(k / MX_GROUP)))]
    if t in (AscendType.W8A8_DYNAMIC, AscendType.W8A16, AscendType.WFP8AFP8_DYNAMIC):  # the last: read, not written
        codes = "F8_E4M3" if t is AscendType.WFP8AFP8_DYNAMIC else "I8"
        return [
            (name, codes, (n, k)),
            (f"{base}.weight_scale", "F32", (n, 1)),
            (f"{base}.weight_offset", "F32", (n, 1)),
        ]
    if t is AscendType.W4A8_DYNAMIC:  # pairs of rows in one byte; scale_bias per K slice (rules.scale_bias_slices)
        return [
            (name, "I8", (n // 2, k)),
            (f"{base}.weight_scale", "F32", (n, 1)),
            (f"{base}.weight_offset", "F32", (n, 1)),
            (f"{base}.scale_bias", "F32", (n, scale_bias_slices(name))),
        ]
    if t is AscendType.W8A8:
        return [
            (name, "I8", (n, k)),
            (f"{base}.quant_bias", "I32", (n,)),
            (f"{base}.input_scale", "F32", (1,)),
            (f"{base}.input_offset", "F32", (1,)),
            (f"{base}.deq_scale", "I64" if deq_int64 else "F32", (n,)),
        ]
    raise ConversionError(f"{t.value} is not written")


def scale_bias_slices(name: str) -> int:
    """W4A8_DYNAMIC's scale_bias columns: msModelSlim's `process_scale(name, ..., tp_num=16)` sums whole rows of
    the column-parallel projections and 16 slices of K for the row-parallel ones (o_proj, down_proj, w2)."""
    if any(p in name for p in ("up_proj", "gate_proj", "q_proj", "k_proj", "v_proj", "w1", "w3")):
        return 1
    if any(p in name for p in ("down_proj", "o_proj", "w2")):
        return 16
    raise ConversionError(
        f"{name}: W4A8_DYNAMIC's scale_bias is defined (msModelSlim process_scale) only for "
        "q/k/v/o, gate/up/down and w1/w2/w3 projections; keep it FLOAT with --exclude"
    )


def logical(shape, t: AscendType) -> tuple[int, ...]:
    """A stored weight's element shape (FP4 types hold two codes per byte along K, W4A8_DYNAMIC two rows)."""
    if t is AscendType.W4A8_DYNAMIC:
        return (shape[0] * 2, shape[1])
    return (shape[0], shape[1] * 2) if t.fp4 else tuple(shape)
