"""DeepSeek-V4's layout: native tensor names, `.scale` tensors, FP8 weights and FP4 routed experts.

`X.weight` F8_E4M3 beside `X.scale` per bm x bn block (ceil grid): F8_E8M0 in V4-Flash / -Pro, F32 in
the -Base models. Routed experts (`...experts.E.w1` / `w2` / `w3`) of the instruct models: `X.weight`
I8 [out, in/2] holding two E2M1 codes per byte (the low nibble is the even column) beside `X.scale`
F8_E8M0 [out, in/32]. config.json: V3.1's `quantization_config` (`quant_method "fp8"`, `scale_fmt
"ue8m0"`, `weight_block_size`) plus top-level `expert_dtype` ("fp4"; absent in the FP8 -Base models,
which vLLM then took for FP4: written explicitly here). Names are whatever the source calls its
tensors. DeepSeek's code reads E2M1 code 8 as +0 (`values` does too). `--preset deepseek-v4` puts
routed experts in MXFP4 (OCP FLOOR scales: DeepSeek's own rule is not published) and the rest in
`deepseek-v3.1` FP8 with E8M0 scales.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ...codec.packing import pack, unpack
from ...errors import CheckpointError, LayoutError
from ...quant import ScaleStorage, Scheme, get_preset
from ...quant.scheme import BlockKind
from .base import LayoutHandler, LayoutName, StoredWeight, Writer, scheme_groups, with_config
from .common import (
    base_name,
    block_tensor,
    cannot_hold,
    check_grid,
    fp8_preset,
    grid_weights,
    read_codes,
    read_scales,
    scale_storage,
)
from .deepseek import SCALE_DTYPES, block_size

SCALE = "scale"
OWN_PRESET = "deepseek-v4"  # experts MXFP4, the rest deepseek-v3.1 FP8 (E8M0 scales)
EXPERT_DTYPES = ("fp4", "fp8")
_ROUTED = re.compile(r"(^|\.)experts\.\d+\.")  # routed experts; `shared_experts.` does not match
E2M1, E4M3 = "float4_e2m1fn", "float8_e4m3fn"


def routed_expert(name: str) -> bool:
    return _ROUTED.search(name) is not None


def _expert_dtype(ckpt) -> str | None:
    v = (ckpt.config or {}).get("expert_dtype")
    if v is not None and v not in EXPERT_DTYPES:
        raise LayoutError(
            f"{ckpt.root / 'config.json'}: expert_dtype {v!r} is not read (read: {', '.join(EXPERT_DTYPES)})"
        )
    return v


def _fp4(scheme: Scheme) -> bool:
    return scheme.element.name == E2M1


class DeepSeekV4(LayoutHandler):
    name = LayoutName.DEEPSEEK_V4
    summary = (
        "X.weight F8_E4M3 + X.scale F8_E8M0 per 128x128 block; routed experts X.weight I8 (2 E2M1 codes "
        "per byte) + X.scale F8_E8M0 per 1x32; native names"
    )
    loaders = ("DeepSeek-V4 inference/ (model.py; convert.py --expert-dtype fp8 widens the experts)", "vLLM")
    quant_methods = ()  # "fp8" is DeepSeek's: claimed here only with expert_dtype or X.scale names
    presets = (OWN_PRESET,)

    def detect(self, ckpt):
        if ckpt.quantization_config.get("quant_method") != "fp8":
            return None
        dtype = _expert_dtype(ckpt)
        if dtype is not None:
            return f"config.json has expert_dtype {dtype!r} beside quant_method 'fp8'"
        if any(n.endswith("." + SCALE) for n in ckpt.tensors) and not any(
            n.endswith(".weight_scale_inv") for n in ckpt.tensors
        ):
            return "quant_method 'fp8' with X.scale tensors (DeepSeek-V4's names; V3 names them weight_scale_inv)"
        return None

    def signature(self, ckpt):
        hit = next((n for n, (_, i) in ckpt.tensors.items() if n.endswith("." + SCALE) and i.dtype == "F8_E8M0"), None)
        return f"no quantization_config, but F8_E8M0 tensors such as {hit!r} (DeepSeek-V4's names)" if hit else None

    def weights(self, ckpt):
        _expert_dtype(ckpt)
        bm, bn = block_size(ckpt)
        pow2 = ckpt.quantization_config.get("scale_fmt") == "ue8m0"
        fp4 = Scheme.build(E2M1, "floor", "1x32", storage="e8m0", profile="ocp-mx", name="deepseek-v4/expert")
        fp8 = {}  # one Scheme per scale storage

        def make(w, s):
            info = ckpt.info(w)
            if len(info.shape) == 2 and info.dtype == "F8_E4M3":
                storage = scale_storage(ckpt, s, SCALE_DTYPES, "deepseek-v4 FP8")
                rule = "ue8m0" if pow2 or storage is ScaleStorage.E8M0 else "v3_float"
                scheme = fp8.get(storage) or fp8.setdefault(
                    storage, Scheme.build(E4M3, rule, f"{bm}x{bn}", storage=storage, name="deepseek-v4/weight")
                )
                shape = tuple(info.shape)
            elif len(info.shape) == 2 and info.dtype == "I8":
                scale_storage(ckpt, s, ("F8_E8M0",), "deepseek-v4 FP4")
                scheme, shape = fp4, (info.shape[0], 2 * info.shape[1])
            else:
                raise CheckpointError(
                    f"{ckpt.tensors[w][0]}: weight {w!r} is {info.dtype}{list(info.shape)}; the "
                    "deepseek-v4 layout holds 2-D F8_E4M3 weights and I8 (packed E2M1) experts"
                )
            check_grid(ckpt, w, s, shape, scheme)
            return StoredWeight(w, shape, scheme, {"codes": w, "scale": s}, "FP4 (E2M1)" if _fp4(scheme) else "")

        return grid_weights(ckpt, SCALE, make)

    def read(self, ckpt, w):
        stored, s = read_scales(ckpt, w.parts["scale"], w)
        if _fp4(w.scheme):
            codes = unpack(np.ascontiguousarray(ckpt.read(w.name)).view(np.uint8), E2M1)
        else:
            codes = read_codes(ckpt, w.name, w.shape, w.scheme.element)
        return block_tensor(codes, stored, s, w)

    def values(self, ckpt, w, dtype="float32"):
        v = super().values(ckpt, w, dtype)
        return np.where(v == 0, np.zeros((), v.dtype), v) if _fp4(w.scheme) else v  # DeepSeek's table: code 8 is +0

    def activation_scheme(self, ckpt, w):
        # model.py quantizes activations 1x128 (UE8M0) before fp8_gemm and fp4_gemm alike
        return get_preset("deepseek-v3.1").activation

    def describe(self, ckpt, weights):
        groups = scheme_groups(weights)
        fp4 = [w for w in weights.values() if _fp4(w.scheme)]
        warnings = [
            f"{w.name}: FP4 outside the routed experts; DeepSeek's inference code expects FP4 only for ffn.experts.E.*"
            for w in fp4
            if not routed_expert(w.name)
        ][:3]
        dtype = (ckpt.config or {}).get("expert_dtype")
        experts = [w for w in weights.values() if routed_expert(w.name)]
        if experts and dtype != ("fp4" if fp4 else "fp8"):
            warnings.append(
                f"{'FP4' if fp4 else 'FP8'} routed experts, but config.json says expert_dtype {dtype!r}: "
                "DeepSeek's code and vLLM pick the expert path from it (vLLM takes a missing one as fp4)"
            )
        warnings.append(
            "transformers' FineGrainedFP8 looks for weight_scale_inv, not .scale: convert to --layout "
            "deepseek for it and the V3 loaders of vLLM and SGLang (FP4 experts are widened to FP8 by "
            "DeepSeek's rule; the summary says per tensor whether losslessly)"
        )
        facts = fp8_preset(ckpt, {n: w for n, w in weights.items() if not _fp4(w.scheme)})
        return {
            "groups": groups,
            **facts,
            "preset": OWN_PRESET if fp4 else facts.get("preset"),
            "expert_dtype": dtype,
            "loaders": {
                self.loaders[0]: "loads it (FP8 128x128, FP4 experts 1x32; partial blocks ceil)",
                self.loaders[1]: "its deepseek_v4 model (GPU; not run here); expert_dtype picks the "
                "FP4 or FP8 expert path",
                "fp8port": "load_quantized, dequant, convert",
            },
            "warnings": warnings,
        }

    def writer(self, request, source):
        own = request.preset == OWN_PRESET
        preset = get_preset(request.preset) if request.preset and not own else None
        return DeepSeekV4Writer(self.name, request, source, preset, own=own)


@dataclass
class DeepSeekV4Writer(Writer):
    own: bool = False  # --preset deepseek-v4

    @property
    def label(self):
        return OWN_PRESET if self.own else super().label

    def preset_scheme(self, name, shape):
        if not self.own:
            return super().preset_scheme(name, shape)
        if routed_expert(name):
            return get_preset("mxfp4").weight
        return get_preset("deepseek-v3.1").weight.with_(storage="e8m0")

    def reblocks(self, scheme):
        return scheme.block.kind is BlockKind.TILE  # --block re-blocks the FP8 parts; FP4 stays 1x32

    def hold(self, name, shape, scheme):
        if len(shape) != 2:
            raise cannot_hold("deepseek-v4", scheme, "its weights are 2-D")
        if scheme.element.name == E4M3 and scheme.block.kind is BlockKind.TILE:  # F32 (-Base) or E8M0 scales
            return scheme if scheme.storage is ScaleStorage.E8M0 else scheme.with_(storage="float32")
        if (
            _fp4(scheme)
            and scheme.block.kind is BlockKind.VECTOR
            and scheme.block.size == (32,)
            and scheme.block.axis % 2 == 1
            and scheme.scale_rule.power_of_two
            and shape[1] % 32 == 0
        ):
            if not routed_expert(name):
                raise cannot_hold(
                    "deepseek-v4",
                    scheme,
                    "FP4 is for routed experts (ffn.experts.E.*) only; "
                    f"--preset {OWN_PRESET} puts those in FP4 and the rest in FP8",
                )
            return scheme.with_(storage="e8m0")
        raise cannot_hold(
            "deepseek-v4",
            scheme,
            "it holds E4M3 in bm x bn tiles and routed experts in E2M1 1x32 with E8M0 scales (K a multiple of 32)",
        )

    def outputs(self, name, shape, scheme):
        n, k = shape
        code = (name, "I8", (n, k // 2)) if _fp4(scheme) else (name, "F8_E4M3", (n, k))
        return [code, (f"{base_name(name)}.{SCALE}", scheme.storage.safetensors, scheme.block.grid(shape))]

    def arrays(self, name, q):
        codes = np.asarray(q.codes, np.uint8)
        if _fp4(q.scheme):
            codes = pack(codes, E2M1).view(np.int8)
        return [codes, np.asarray(q.scale).reshape(q.scheme.block.grid(q.shape))]

    def config(self, config, jobs):
        schemes = self.schemes(jobs)
        if not schemes:
            out = with_config(config, None)
            return None if out is None else {k: v for k, v in out.items() if k != "expert_dtype"}
        tiles = {s.block.size for s in schemes if s.block.kind is BlockKind.TILE}
        if len(tiles) > 1:
            raise cannot_hold("deepseek-v4", schemes[1], f"one weight_block_size per checkpoint, not {sorted(tiles)}")
        qc = {
            "quant_method": "fp8",
            "fmt": "e4m3",
            "activation_scheme": "dynamic",
            "weight_block_size": list(tiles.pop() if tiles else (128, 128)),
        }
        if all(s.scale_rule.power_of_two for s in schemes):
            qc["scale_fmt"] = "ue8m0"
        out = with_config(config, qc)
        if out is not None:  # explicit: a V4 config without it was read as FP4 experts by vLLM (#42970)
            out["expert_dtype"] = "fp4" if any(_fp4(s) for s in schemes) else "fp8"
        return out
