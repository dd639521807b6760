"""DeepSeek's FP8 layout (V3, V3.1, V3.2), the one transformers' FineGrainedFP8, vLLM and SGLang load.

`X.weight` F8_E4M3 beside `X.weight_scale_inv`: the float32 dequantization multiplier per block on
a ceil grid (V3 / V3.1 / V3.2: F32; BF16 and F16 are read too), or one F8_E8M0 byte per block
(DeepSeek-V4 style, `--scale-dtype e8m0`). config.json: `quantization_config = {"quant_method":
"fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [bm, bn]}`, plus
`"scale_fmt": "ue8m0"` when the scales are powers of two (V3.1, V3.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import CheckpointError
from ...quant import ScaleStorage, Scheme, get_preset
from ...quant.relayout import widened
from ...quant.scheme import BlockKind
from .base import LayoutHandler, LayoutName, StoredWeight, with_config
from .common import (
    GridWriter,
    block_tensor,
    cannot_hold,
    check_grid,
    fp8_preset,
    grid_weights,
    read_codes,
    read_scales,
    scale_storage,
)

SCALE = "weight_scale_inv"
SCALE_DTYPES = ("F32", "BF16", "F16", "F8_E8M0")
PRESETS = ("deepseek-v3", "deepseek-v3.1")  # what --preset writes here by default


def block_size(ckpt) -> tuple[int, int]:
    bs = ckpt.quantization_config.get("weight_block_size", [128, 128])
    if not (isinstance(bs, list) and len(bs) == 2 and all(type(b) is int and b > 0 for b in bs)):
        raise CheckpointError(f"{ckpt.root / 'config.json'}: weight_block_size {bs!r} is not two positive integers")
    return tuple(bs)


def _transformers_warning(name, shape, block) -> str | None:
    """transformers 5.8-5.24 dequantizes on CPU with block = rows // scale_rows (interop-probe §2)."""
    (n, k), (bm, bn) = shape, block
    if n % bm == 0 and k % bn == 0:
        return None
    gn, gk = math.ceil(n / bm), math.ceil(k / bn)
    if n % gn == 0 and k % gk == 0:
        return (
            f"{name} {list(shape)}: transformers 5.8-5.24 would read it with {n // gn}x{k // gk} blocks "
            f"instead of {bm}x{bn} and load WRONG weights silently (dequantize on CPU)"
        )
    return (
        f"{name} {list(shape)}: transformers 5.8-5.24 fails to load it on CPU ('not divisible by scale grid "
        f"({gn}, {gk})'); fp8port dequant, vLLM and compressed-tensors read it correctly"
    )


class DeepSeek(LayoutHandler):
    name = LayoutName.DEEPSEEK
    summary = "X.weight F8_E4M3 + X.weight_scale_inv (F32 multiplier or F8_E8M0) per bm x bn block"
    loaders = ("transformers FineGrainedFP8 (>= 5.0 on CPU)", "vLLM", "SGLang", "DeepSeek inference/")
    quant_methods = ("fp8",)
    presets = PRESETS

    def signature(self, ckpt):
        if any(n.endswith("." + SCALE) for n in ckpt.tensors):
            return f"no quantization_config, but tensors named *.{SCALE} (only DeepSeek's layout names them so)"
        return None

    def weights(self, ckpt):
        bm, bn = block_size(ckpt)
        pow2 = ckpt.quantization_config.get("scale_fmt") == "ue8m0"
        schemes = {}  # one Scheme object per storage: plans pickled to workers share it

        def make(w, s):
            info = ckpt.info(w)
            if info.dtype != "F8_E4M3" or len(info.shape) != 2:
                raise CheckpointError(
                    f"{ckpt.tensors[w][0]}: weight {w!r} is {info.dtype}{list(info.shape)}; the "
                    "deepseek layout holds 2-D F8_E4M3 weights"
                )
            storage = scale_storage(ckpt, s, SCALE_DTYPES, "deepseek")
            rule = "ue8m0" if pow2 or storage is ScaleStorage.E8M0 else "v3_float"
            scheme = schemes.get(storage) or schemes.setdefault(
                storage, Scheme.build("float8_e4m3fn", rule, f"{bm}x{bn}", storage=storage, name="deepseek/weight")
            )
            check_grid(ckpt, w, s, info.shape, scheme)
            return StoredWeight(w, tuple(info.shape), scheme, {"codes": w, "scale": s})

        return grid_weights(ckpt, SCALE, make)

    def read(self, ckpt, w):
        stored, s = read_scales(ckpt, w.parts["scale"], w)
        return block_tensor(read_codes(ckpt, w.name, w.shape, w.scheme.element), stored, s, w)

    def activation_scheme(self, ckpt, w):
        return get_preset("deepseek-v3.1" if w.scheme.scale_rule.power_of_two else "deepseek-v3").activation

    def describe(self, ckpt, weights):
        out = super().describe(ckpt, weights)
        out.update(fp8_preset(ckpt, weights))
        if ckpt.quantization_config.get("scale_fmt") == "ue8m0" and out.get("scales_all_powers_of_two") is False:
            out["warnings"].append("config says scale_fmt ue8m0 but some scales are not powers of two")
        by_shape: dict = {}
        for w in weights.values():
            by_shape.setdefault(w.shape, []).append(w)
        for shape, ws in by_shape.items():
            msg = _transformers_warning(ws[0].name, shape, ws[0].scheme.block.size)
            if msg:
                more = f" (and {len(ws) - 1} more of this shape)" if len(ws) > 1 else ""
                out["warnings"].append(msg + more)
        return out

    def writer(self, request, source):
        preset = get_preset(request.preset) if request.preset else None
        return DeepSeekWriter(self.name, request, source, preset, scale_suffix=SCALE)


@dataclass
class DeepSeekWriter(GridWriter):
    def hold(self, name, shape, scheme):
        if self.preset is None and scheme.element.name == "float4_e2m1fn":
            scheme = widened(scheme, shape) or scheme  # DeepSeek-V4's FP4 experts: its own converter's FP8
        if scheme.element.name != "float8_e4m3fn":
            raise cannot_hold("deepseek", scheme, "its weights are F8_E4M3")
        if scheme.block.kind is not BlockKind.TILE or len(shape) != 2:
            raise cannot_hold("deepseek", scheme, "weight_block_size gives 2-D bm x bn blocks")
        if scheme.storage not in (ScaleStorage.FLOAT32, ScaleStorage.E8M0):
            raise cannot_hold("deepseek", scheme, "its scales are F32 multipliers or F8_E8M0 bytes")
        return scheme

    def config(self, config, jobs):
        schemes = self.schemes(jobs)
        if not schemes:
            return with_config(config, None)
        blocks = {s.block.size for s in schemes}
        if len(blocks) > 1:
            raise cannot_hold("deepseek", schemes[1], f"one weight_block_size per checkpoint, not {sorted(blocks)}")
        qc = {
            "quant_method": "fp8",
            "fmt": "e4m3",
            "activation_scheme": "dynamic",
            "weight_block_size": list(blocks.pop()),
        }
        if all(s.scale_rule.power_of_two for s in schemes):
            qc["scale_fmt"] = "ue8m0"
        out = with_config(config, qc)  # expert_dtype is DeepSeek-V4's mark; here every weight is FP8
        return None if out is None else {k: v for k, v in out.items() if k != "expert_dtype"}
