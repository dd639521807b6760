"""AscendV1's quant types and the tensors each one stores (shared/research/ascend-layout.md §1-§3)."""

from __future__ import annotations

import math

from ....errors import ConversionError, UnknownNameError
from ....names import NamedEnum
from ....quant import Scheme, get_preset

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
    def writable(cls, value) -> "AscendType":
        """A type `convert --layout ascend --preset TYPE` writes (errors list the writable ones)."""
        try:
            t = cls.parse(value)
        except UnknownNameError:
            raise UnknownNameError(cls.__label__, value, [m.value for m in WRITABLE]) from None
        if t is cls.WFP8AFP8_DYNAMIC:
            raise ConversionError("WFP8AFP8_DYNAMIC is not written: msModelSlim names it so, but vLLM-Ascend "
                                  "registers W8A8FP8_DYNAMIC and SGLang neither, so no loader would accept "
                                  "the file (ascend-layout.md §2.5); use W8A8_MXFP8 on Ascend 950")
        if t not in WRITABLE:
            raise ConversionError(f"{t.value} is an AscendV1 type fp8port reads but does not write (it needs "
                                  f"calibration or extra tensors); writable: {', '.join(m.value for m in WRITABLE)}")
        return t

    @property
    def mx(self) -> bool:
        return self in (AscendType.W8A8_MXFP8, AscendType.W4A8_MXFP, AscendType.W4A4_MXFP4)

    @property
    def fp4(self) -> bool:
        return self in (AscendType.W4A8_MXFP, AscendType.W4A4_MXFP4)

    @property
    def per_channel(self) -> bool:
        return self in (AscendType.W8A8_DYNAMIC, AscendType.W8A16, AscendType.W8A8_MIX,
                        AscendType.WFP8AFP8_DYNAMIC)

    @property
    def scheme(self) -> Scheme:
        """What decodes a weight of this type: MX presets, or int8 codes (value code / 64, the int8
        element) with a float32 scale per output row holding 64 x the stored scale."""
        if self.mx:
            return get_preset(MX_PRESET[self]).weight
        return Scheme.build("int8", "v3_float", "row", storage="float32", name=f"ascend/{self.value}")

    @property
    def activation(self) -> Scheme | None:
        """The activation scheme of a w8a8 run (None where it is no fp8port scheme: int8 per token)."""
        return get_preset(ACTIVATION_PRESET[self]).activation if self in ACTIVATION_PRESET else None


PRIORITY = list(AscendType)[:-1]
WRITABLE = (AscendType.W8A8_MXFP8, AscendType.W4A8_MXFP, AscendType.W4A4_MXFP4, AscendType.W8A8_DYNAMIC,
            AscendType.W8A16, AscendType.W8A8)
MX_PRESET = {AscendType.W8A8_MXFP8: "mxfp8", AscendType.W4A8_MXFP: "mxfp4", AscendType.W4A4_MXFP4: "mxfp4"}
ACTIVATION_PRESET = {AscendType.W8A8_MXFP8: "mxfp8", AscendType.W4A8_MXFP: "mxfp8", AscendType.W4A4_MXFP4: "mxfp4"}

# Scheme registries of the loaders (§3.1 vLLM-Ascend @182b75e, §3.2 SGLang modelslim.py).
LOADERS = {
    "vllm-ascend": {"linear": {"W8A8", "W8A8_DYNAMIC", "W8A8_MIX", "W8A16", "W8A8_MXFP8", "W4A8_MXFP",
                               "W4A4_MXFP4", "W4A4_DYNAMIC", "W4A4_FLATQUANT_DYNAMIC", "W4A4_MXFP4_FLATQUANT",
                               "W8A8FP8_DYNAMIC"},
                    "moe": {"W8A8_DYNAMIC", "W8A8_MXFP8", "W4A8_DYNAMIC", "W4A8_MXFP", "W4A4_MXFP4", "W4A16",
                            "W4A16_MXFP4", "W8A8FP8_DYNAMIC"}},
    "sglang": {"linear": {"W4A4_DYNAMIC", "W8A8", "W8A8_DYNAMIC", "W8A8_MXFP8", "W4A8_MXFP", "W4A4_MXFP4"},
               "moe": {"W4A4_DYNAMIC", "W4A8_DYNAMIC", "W8A8_DYNAMIC", "W8A8_MXFP8"}},
}

COMPANIONS = ("weight_scale", "weight_offset", "input_scale", "input_offset", "deq_scale", "quant_bias",
              "weight_dual_scale")


def entries(t: AscendType, name: str, shape, float_dtype: str = "BF16", deq_int64: bool = False):
    """(tensor name, safetensors dtype, shape) written for weight `name` [N, K] in type t."""
    n, k = shape
    base = name[: -len(".weight")]
    if t is AscendType.W8A8_MXFP8:
        return [(name, "F8_E4M3", (n, k)), (f"{base}.weight_scale", "U8", (n, math.ceil(k / MX_GROUP)))]
    if t.fp4:
        return [(name, "U8", (n, k // 2)), (f"{base}.weight_scale", "U8", (n, math.ceil(k / MX_GROUP)))]
    if t in (AscendType.W8A8_DYNAMIC, AscendType.W8A16):
        return [(name, "I8", (n, k)), (f"{base}.weight_scale", "F32", (n, 1)),
                (f"{base}.weight_offset", "F32", (n, 1))]
    if t is AscendType.W8A8:
        return [(name, "I8", (n, k)), (f"{base}.input_scale", "F32", (1,)), (f"{base}.input_offset", "F32", (1,)),
                (f"{base}.deq_scale", "I64" if deq_int64 else "F32", (n,)), (f"{base}.quant_bias", "I32", (n,))]
    raise ConversionError(f"{t.value} is not written")


def logical(shape, t: AscendType) -> tuple[int, ...]:
    """A stored weight's element shape (FP4 types hold two codes per byte along K)."""
    return (shape[0], shape[1] * 2) if t.fp4 else tuple(shape)
