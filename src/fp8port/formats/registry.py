"""The formats fp8port knows, by canonical name."""

from __future__ import annotations

from ..errors import UnknownNameError
from .spec import FormatSpec, Kind, NaNStyle

_F = Kind.FLOAT

FORMATS: dict[str, FormatSpec] = {
    s.name: s
    for s in (
        FormatSpec(
            "float8_e4m3fn",
            _F,
            8,
            4,
            3,
            7,
            nan=NaNStyle.ALL_ONES,
            torch="float8_e4m3fn",
            ml_dtypes="float8_e4m3fn",
            safetensors="F8_E4M3",
            summary="OCP FP8 E4M3: DeepSeek and MXFP8 elements; no Inf",
        ),
        FormatSpec(
            "float8_e5m2",
            _F,
            8,
            5,
            2,
            15,
            inf=True,
            nan=NaNStyle.IEEE,
            torch="float8_e5m2",
            ml_dtypes="float8_e5m2",
            safetensors="F8_E5M2",
            summary="OCP FP8 E5M2: IEEE-like, Inf and NaN",
        ),
        FormatSpec(
            "float8_e4m3fnuz",
            _F,
            8,
            4,
            3,
            8,
            nan=NaNStyle.NEG_ZERO,
            torch="float8_e4m3fnuz",
            ml_dtypes="float8_e4m3fnuz",
            safetensors="F8_E4M3FNUZ",
            summary="AMD MI300 E4M3: one zero, NaN = 0x80",
        ),
        FormatSpec(
            "float8_e5m2fnuz",
            _F,
            8,
            5,
            2,
            16,
            nan=NaNStyle.NEG_ZERO,
            torch="float8_e5m2fnuz",
            ml_dtypes="float8_e5m2fnuz",
            safetensors="F8_E5M2FNUZ",
            summary="AMD MI300 E5M2: one zero, NaN = 0x80",
        ),
        FormatSpec(
            "float8_e8m0fnu",
            _F,
            8,
            8,
            0,
            127,
            signed=False,
            nan=NaNStyle.ALL_ONES,
            subnormals=False,
            torch="float8_e8m0fnu",
            ml_dtypes="float8_e8m0fnu",
            safetensors="F8_E8M0",
            en_dtypes="float8_e8m0",
            summary="UE8M0 / E8M0 scale: 2^(b-127), 0xFF NaN, no zero",
        ),
        FormatSpec(
            "float6_e2m3fn",
            _F,
            6,
            2,
            3,
            1,
            ml_dtypes="float6_e2m3fn",
            safetensors="F6_E2M3",
            en_dtypes="float6_e2m3",
            summary="MXFP6 E2M3 element; no Inf/NaN",
        ),
        FormatSpec(
            "float6_e3m2fn",
            _F,
            6,
            3,
            2,
            3,
            ml_dtypes="float6_e3m2fn",
            safetensors="F6_E3M2",
            en_dtypes="float6_e3m2",
            summary="MXFP6 E3M2 element; no Inf/NaN",
        ),
        FormatSpec(
            "float4_e2m1fn",
            _F,
            4,
            2,
            1,
            1,
            torch="float4_e2m1fn_x2",
            ml_dtypes="float4_e2m1fn",
            safetensors="F4",
            en_dtypes="float4_e2m1",
            summary="MXFP4 / NVFP4 element; no Inf/NaN",
        ),
        FormatSpec(
            "float4_e1m2", _F, 4, 1, 2, 1, en_dtypes="float4_e1m2", summary="Ascend 950 FP4 E1M2: 0..1.75; no Inf/NaN"
        ),
        FormatSpec(
            "hifloat8",
            Kind.HIF8,
            8,
            nan=NaNStyle.NEG_ZERO,
            en_dtypes="hifloat8",
            summary="Ascend HiF8: tapered precision, 38 binades, +-Inf, NaN = 0x80",
        ),
        FormatSpec(
            "int8",
            Kind.INT,
            8,
            mbits=6,
            torch="int8",
            safetensors="I8",
            summary="MXINT8 element: two's complement, value = code / 64",
        ),
        FormatSpec(
            "int4",
            Kind.INT,
            4,
            mbits=2,
            summary="4-bit int element, MXINT8's convention: two's complement, value = code / 4",
        ),
        FormatSpec(
            "qint8",
            Kind.INT,
            8,
            mbits=0,
            safetensors="I8",
            summary="plain int8 integer, value = code (GGUF Q8_0, per-channel INT8)",
        ),
    )
}

# Other spellings users type; each maps to one canonical name.
ALIASES = {
    "e4m3": "float8_e4m3fn",
    "fp8_e4m3": "float8_e4m3fn",
    "f8_e4m3": "float8_e4m3fn",
    "e5m2": "float8_e5m2",
    "fp8_e5m2": "float8_e5m2",
    "f8_e5m2": "float8_e5m2",
    "e4m3fnuz": "float8_e4m3fnuz",
    "e5m2fnuz": "float8_e5m2fnuz",
    "e8m0": "float8_e8m0fnu",
    "ue8m0": "float8_e8m0fnu",
    "float8_e8m0": "float8_e8m0fnu",
    "f8_e8m0": "float8_e8m0fnu",
    "e2m3": "float6_e2m3fn",
    "fp6_e2m3": "float6_e2m3fn",
    "float6_e2m3": "float6_e2m3fn",
    "e3m2": "float6_e3m2fn",
    "fp6_e3m2": "float6_e3m2fn",
    "float6_e3m2": "float6_e3m2fn",
    "e2m1": "float4_e2m1fn",
    "fp4": "float4_e2m1fn",
    "fp4_e2m1": "float4_e2m1fn",
    "float4_e2m1": "float4_e2m1fn",
    "float4_e2m1fn_x2": "float4_e2m1fn",
    "e1m2": "float4_e1m2",
    "fp4_e1m2": "float4_e1m2",
    "hif8": "hifloat8",
    "mxint8": "int8",
    "mxint4": "int4",
}


def get_format(fmt: str | FormatSpec) -> FormatSpec:
    """Parse a format name (or pass a spec through). Unknown names list the valid ones."""
    if isinstance(fmt, FormatSpec):
        return fmt
    key = str(fmt).strip().lower()
    key = ALIASES.get(key, key)
    try:
        return FORMATS[key]
    except KeyError:
        raise UnknownNameError("format", fmt, FORMATS) from None
