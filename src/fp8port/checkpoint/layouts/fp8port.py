"""fp8port's own layout, for what no ecosystem layout holds (HiF8, E1M2, MXFP6, MXINT8, ...).

`X.weight` codes in the element's safetensors dtype (F4 / F6 packed over the flat tensor, else U8
or I8), `X.weight_scale` in its storage dtype, `X.weight_tensor_scale` (F32, NVFP4 only).
config.json: `quantization_config = {"quant_method": "fp8port", "preset": ..., "weight_scheme":
{the whole scheme}}`, so a reader needs nothing else; weights whose scheme differs from
`weight_scheme` are listed under `weight_schemes`. Nothing but fp8port loads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import CheckpointError, Fp8portError
from ...quant import PRESETS, ScaleStorage, Scheme, get_preset, nvfp4
from ...quant.presets import scheme_from_description
from .base import LayoutHandler, LayoutName, StoredWeight, ignored_modules, with_config
from .common import (
    GridWriter,
    block_tensor,
    check_grid,
    checked,
    code_output,
    grid_weights,
    logical_shape,
    read_codes,
    read_scales,
)

SCALE = "weight_scale"
TENSOR_SCALE = "weight_tensor_scale"
PACKING = {
    "float4": "two codes per byte, element 0 in the low nibble",
    "float6": "bitstream: 4 codes in 3 bytes, little-endian 24-bit words",
}


def _schemes(ckpt) -> tuple[Scheme, dict[str, Scheme]]:
    """The checkpoint's weight scheme, and the per-weight ones that differ from it."""
    qc = ckpt.quantization_config
    where = ckpt.root / "config.json"
    if "preset" not in qc:
        raise CheckpointError(f"{where}: fp8port quantization_config has no preset")
    try:
        base = get_preset(qc["preset"]).weight if qc["preset"] is not None else None
        stored = qc.get("weight_scheme")
        if isinstance(stored, dict) and "element" in stored:
            base = scheme_from_description(stored)
        elif base is not None and isinstance(stored, dict) and stored.get("storage") != base.storage.value:
            base = base.with_(storage=stored["storage"])  # an older file: the preset with another storage
        per = {n: scheme_from_description(d) for n, d in (qc.get("weight_schemes") or {}).items()}
    except Fp8portError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{where}: fp8port weight_scheme is not a scheme description ({e!r})") from None
    if base is None:
        raise CheckpointError(f"{where}: fp8port quantization_config names no preset and no weight_scheme")
    return base, per


class Fp8port(LayoutHandler):
    name = LayoutName.FP8PORT
    summary = "X.weight codes + X.weight_scale (+ X.weight_tensor_scale), the whole scheme in config.json"
    loaders = ("fp8port (load_quantized, dequant); nothing else loads it: convert to an ecosystem layout to deploy",)
    quant_methods = ("fp8port",)

    def weights(self, ckpt):
        base, per = _schemes(ckpt)

        def make(w, s):
            scheme = per.get(w, base)
            info, sinfo = ckpt.info(w), ckpt.info(s)
            code = code_output(w, logical_shape(info, scheme.element), scheme.element)[1]
            if info.dtype != code:
                raise CheckpointError(
                    f"{ckpt.tensors[w][0]}: weight {w!r} is {info.dtype}; {scheme.name} codes are {code}"
                )
            if sinfo.dtype != scheme.storage.safetensors:
                raise CheckpointError(
                    f"{ckpt.tensors[s][0]}: scale {s!r} is {sinfo.dtype}; {scheme.name} scales are "
                    f"{scheme.storage.safetensors}"
                )
            shape = logical_shape(info, scheme.element)
            check_grid(ckpt, w, s, shape, scheme)
            parts = {"codes": w, "scale": s}
            if scheme.storage.tensor_scale_bytes:
                t = f"{w[: -len('.weight')]}.{TENSOR_SCALE}"
                if t not in ckpt.tensors or ckpt.info(t).dtype != "F32" or ckpt.info(t).shape not in ((), (1,)):
                    raise CheckpointError(f"{ckpt.tensors[w][0]}: {scheme.name} weight {w!r} needs an F32 scalar {t!r}")
                parts["tensor_scale"] = t
            return StoredWeight(w, shape, scheme, parts)

        return grid_weights(ckpt, SCALE, make)

    def read(self, ckpt, w):
        codes = read_codes(ckpt, w.name, w.shape, w.scheme.element)
        if w.scheme.storage is not ScaleStorage.E4M3_TENSOR:
            stored, s = read_scales(ckpt, w.parts["scale"], w)
            return block_tensor(codes, stored, s, w)
        t = np.float32(ckpt.read(w.parts["tensor_scale"]).reshape(()))
        stored = ckpt.read(w.parts["scale"])
        # the tensor scale in the scheme's own convention (compressed-tensors' divisor, else a multiplier)
        s = checked(ckpt, w.parts["scale"], nvfp4.block_multipliers(stored.view(np.uint8), t, w.scheme.scale_rule))
        return block_tensor(codes, stored, s, w, tensor_scale=float(t))

    def activation_scheme(self, ckpt, w):
        preset = ckpt.quantization_config.get("preset")
        return get_preset(preset).activation if preset else None

    def describe(self, ckpt, weights):
        out = super().describe(ckpt, weights)
        out["preset"] = ckpt.quantization_config.get("preset")
        return out

    def writer(self, request, source):
        return Fp8portWriter(
            self.name,
            request,
            source,
            get_preset(request.preset) if request.preset else None,
            scale_suffix=SCALE,
            tensor_scale_suffix=TENSOR_SCALE,
        )


@dataclass
class Fp8portWriter(GridWriter):
    def config(self, config, jobs):
        schemes = self.schemes(jobs)
        if not schemes:
            return with_config(config, None)
        main = max(schemes, key=lambda s: sum(j.scheme == s for j in jobs))
        preset = self.label or next((p.name for p in PRESETS.values() if p.weight == main), None)
        qc = {
            "quant_method": "fp8port",
            "format_version": 1,
            "preset": preset,
            "weight_scheme": main.describe(),
            "ignored": ignored_modules(jobs),
            "packing": PACKING,
        }
        others = {j.source: j.scheme.describe() for j in jobs if j.scheme is not None and j.scheme != main}
        if others:
            qc["weight_schemes"] = others
        return with_config(config, qc)
