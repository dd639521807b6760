"""NVIDIA ModelOpt's NVFP4 layout (`quant_method: "modelopt"`, `hf_quant_config.json`), read and written.

Per linear `X`: `X.weight` U8 [N, K/2] (two E2M1 codes per byte, low nibble first), `X.weight_scale`
F8_E4M3 [N, K/16], `X.weight_scale_2` F32 0-d: a MULTIPLIER p = amax / 2688 (value = code * s * p), and
for quant_algo NVFP4 (static activations) `X.input_scale` F32 0-d; quant_algo W4A16_NVFP4 has none.
`hf_quant_config.json` = {"producer", "quantization": {quant_algo, kv_cache_quant_algo, group_size,
exclude_modules}}, and config.json carries the same as a `quantization_config` (its
`convert_hf_quant_config_format`). Its own dequantization decodes E2M1 code 8 as +0.

compressed-tensors stores the reciprocal convention (g = 1 / p); `relayout.rounding` says when moving
between them is exact (docs/layouts-on-disk.md section 3).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from ... import __version__
from ...errors import CheckpointError, LayoutError
from ...quant import ScaleStorage, get_preset, nvfp4
from ..folder import HF_QUANT_CONFIG
from .base import LayoutHandler, LayoutName, StoredWeight, ignored_modules, with_config
from .common import Nvfp4Writer, base_name, block_tensor, cannot_hold, check_grid, checked, pack_codes, read_codes
from .fused import fused_sets

SCALE, SCALE_2, INPUT = "weight_scale", "weight_scale_2", "input_scale"
ALGOS = {"NVFP4": True, "W4A16_NVFP4": False}  # quant_algo read and written -> static input scales
GROUP = 16
PRESET = "nvfp4"  # the scheme a ModelOpt weight is read in: NVFP4 with a multiplier tensor scale


def settings(ckpt) -> dict:
    """quant_algo, group_size, kv_cache_quant_algo and where they were read: config.json's
    quantization_config when it says modelopt, else hf_quant_config.json; None for a folder found by its
    tensor names alone."""
    qc = ckpt.quantization_config
    if not qc and not (ckpt.root / HF_QUANT_CONFIG).is_file():
        return {"quant_algo": None, "group_size": GROUP, "kv_cache_quant_algo": None, "where": None}
    if qc.get("quant_method") == "modelopt":
        where = ckpt.root / "config.json"
        groups = qc.get("config_groups")
        sizes = (
            [
                (g.get("weights") or {}).get("group_size")
                for g in groups.values()
                if isinstance(g, dict) and isinstance(g.get("weights"), dict)
            ]
            if isinstance(groups, dict)
            else []
        )
        out = {
            "quant_algo": qc.get("quant_algo"),
            "group_size": sizes[0] if sizes else GROUP,
            "kv_cache_quant_algo": qc.get("kv_cache_scheme"),
            "where": where,
        }
        if len(set(map(repr, sizes))) > 1:
            raise CheckpointError(f"{where}: ModelOpt config_groups with group sizes {sizes}; one is read")
    else:
        where = ckpt.root / HF_QUANT_CONFIG
        try:
            q = json.loads(where.read_text())["quantization"]
            out = {
                "quant_algo": q.get("quant_algo"),
                "group_size": q.get("group_size", GROUP),
                "kv_cache_quant_algo": q.get("kv_cache_quant_algo"),
                "where": where,
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise LayoutError(
                f"{where}: not a ModelOpt quantization config (need a JSON object with `quantization`)"
            ) from None
    if not isinstance(out["quant_algo"], str) or out["quant_algo"] not in ALGOS:  # NVFP4_AWQ, FP8, MIXED_PRECISION
        raise LayoutError(f"{where}: ModelOpt quant_algo {out['quant_algo']!r} is not read (read: {', '.join(ALGOS)})")
    if out["group_size"] != GROUP:
        raise CheckpointError(f"{where}: NVFP4 group_size {out['group_size']!r}; ModelOpt NVFP4 has {GROUP}")
    return out


class ModelOpt(LayoutHandler):
    name = LayoutName.MODELOPT
    summary = (
        "X.weight U8 (packed E2M1) + X.weight_scale F8_E4M3 per 16 + X.weight_scale_2 F32 multiplier "
        "(+ X.input_scale), hf_quant_config.json"
    )
    quant_methods = ("modelopt",)

    def detect(self, ckpt):
        why = super().detect(ckpt)
        if not why and not ckpt.quantization_config and (ckpt.root / HF_QUANT_CONFIG).is_file():
            why = f"{HF_QUANT_CONFIG} is present (ModelOpt's export)"
        if why:
            settings(ckpt)
        return why

    def signature(self, ckpt):
        if any(n.endswith("." + SCALE_2) for n in ckpt.tensors):
            return f"no quantization_config, but tensors named *.{SCALE_2} (only ModelOpt's layout names them so)"
        return None

    def weights(self, ckpt):
        static = ALGOS.get(settings(ckpt)["quant_algo"], False)
        scheme = get_preset(PRESET).weight
        out = {}
        for t in (n for n in ckpt.tensors if n.endswith("." + SCALE_2)):
            base, where = t[: -len(SCALE_2) - 1], ckpt.tensors[t][0]
            w, s, inp = f"{base}.weight", f"{base}.{SCALE}", f"{base}.{INPUT}"
            if w not in ckpt.tensors or s not in ckpt.tensors:
                raise CheckpointError(f"{where}: {t!r} has no {w!r} and {s!r} beside it")
            info = ckpt.info(w)
            if info.dtype != "U8" or len(info.shape) != 2:
                raise CheckpointError(
                    f"{where}: weight {w!r} is {info.dtype}{list(info.shape)}; ModelOpt NVFP4 "
                    "weights are 2-D U8 (two E2M1 codes per byte)"
                )
            for name, dtype in ((s, "F8_E4M3"), (t, "F32")) + (((inp, "F32"),) if inp in ckpt.tensors else ()):
                if ckpt.info(name).dtype != dtype:
                    raise CheckpointError(f"{where}: {name!r} is {ckpt.info(name).dtype}; ModelOpt stores {dtype}")
            for name in (t, inp):
                if name in ckpt.tensors and ckpt.info(name).shape not in ((), (1,)):
                    raise CheckpointError(f"{where}: {name!r} has shape {list(ckpt.info(name).shape)}; it is a scalar")
            if static and inp not in ckpt.tensors:
                raise CheckpointError(f"{where}: quant_algo NVFP4 has static input scales, but {inp!r} is missing")
            shape = (info.shape[0], info.shape[1] * 2)
            check_grid(ckpt, w, s, shape, scheme)
            parts = {"codes": w, "scale": s, "tensor_scale": t} | ({INPUT: inp} if inp in ckpt.tensors else {})
            out[w] = StoredWeight(w, shape, scheme, parts)
        stray = next(
            (
                n
                for n, (_, i) in ckpt.tensors.items()
                if n.endswith("." + SCALE) and i.dtype == "F8_E4M3" and n[: -len(SCALE)] + SCALE_2 not in ckpt.tensors
            ),
            None,
        )
        if stray:
            raise CheckpointError(
                f"{ckpt.tensors[stray][0]}: NVFP4 block scale {stray!r} has no {stray[: -len(SCALE)] + SCALE_2!r}"
            )
        return out

    def read(self, ckpt, w):
        codes = read_codes(ckpt, w.parts["codes"], w.shape, w.scheme.element)
        p = checked(ckpt, w.parts["tensor_scale"], ckpt.read(w.parts["tensor_scale"]).astype(np.float32).reshape(-1))
        stored = ckpt.read(w.parts["scale"])
        s = checked(ckpt, w.parts["scale"], nvfp4.modelopt_multiplier(stored.view(np.uint8), p[0]))
        return block_tensor(codes, stored, s, w, tensor_scale=float(p[0]))

    def values(self, ckpt, w, dtype="float32"):
        # NVFP4QTensor.dequantize: float32 code * fp32(s * p), its E2M1 table giving +0 for code 8
        q = self.read(ckpt, w)
        return nvfp4.dequantize(q.codes, q.scale_fp32, signed_zero=False).astype(dtype)

    def activation_scheme(self, ckpt, w):
        return get_preset(PRESET).activation

    def describe(self, ckpt, weights):
        out = super().describe(ckpt, weights)
        cfg = settings(ckpt)
        out.update(preset=PRESET, quant_algo=cfg["quant_algo"], config_read_from=cfg["where"] and str(cfg["where"]))
        out["loaders"] = {  # from their sources and docs, not run here (no GPU)
            "vLLM": "modelopt_fp4: FP4 GEMM on Blackwell (W4A4 with input_scale), Marlin W4A16 on older GPUs",
            "SGLang": "modelopt_fp4 (Blackwell)",
            "TensorRT-LLM": "loads ModelOpt exports",
            "transformers": "no loader for pre-quantized NVFP4 (5.25: 'not supported yet'); fp8port dequant first",
        }
        out["pitfalls"] = [
            "weight_scale_2 p is a MULTIPLIER (value = code * s * p); compressed-tensors stores g = 1 / p: moving "
            "between them keeps every code, but 1 / p is exact only for powers of two",
            "compressed-tensors' own ModelOpt converter writes g 0-d, so it computes s / g in bf16 (12 % of the "
            "values of SmolLM2's first two layers one bf16 step off); fp8port writes g as [1], as llm-compressor",
            "vLLM and SGLang keep the max weight_scale_2 / input_scale of a fused q/k/v or gate/up layer",
        ]
        p = {n: float(ckpt.read(w.parts["tensor_scale"]).reshape(-1)[0]) for n, w in weights.items()}
        for names in fused_sets(weights):
            if len({p[n] for n in names}) > 1:
                out["warnings"].append(
                    f"{', '.join(names)}: weight_scale_2 differs within a fused set; vLLM and "
                    "SGLang keep its max for the fused layer, which misreads the others"
                )
        if cfg["kv_cache_quant_algo"]:
            out["warnings"].append(
                f"kv_cache_quant_algo {cfg['kv_cache_quant_algo']!r}: fp8port reads no KV-cache "
                "scheme; convert copies its k/v scale tensors as plain tensors"
            )
        return out

    def writer(self, request, source):
        return ModelOptWriter(
            self.name, request, source, get_preset(request.preset) if request.preset else None, divisor=False
        )


@dataclass
class ModelOptWriter(Nvfp4Writer):
    algo: str = "W4A16_NVFP4"

    def hold(self, name, shape, scheme):
        if scheme.element.name != "float4_e2m1fn" or scheme.storage is not ScaleStorage.E4M3_TENSOR:
            raise cannot_hold(
                "modelopt", scheme, "fp8port writes its NVFP4 (E2M1, E4M3 block scales, F32 tensor scale)"
            )
        if str(scheme.block) != f"1x{GROUP}(axis=-1)" or len(shape) != 2 or shape[-1] % GROUP:
            raise cannot_hold(
                "modelopt", scheme, f"NVFP4 has 1x{GROUP} groups along K of 2-D weights; {name} is {list(shape)}"
            )
        return scheme.with_(scale_rule="nvfp4")  # its tensor scale is a multiplier

    def outputs(self, name, shape, scheme):
        base, (n, k) = base_name(name), shape
        out = [
            (name, "U8", (n, k // 2)),
            (f"{base}.{SCALE}", "F8_E4M3", scheme.block.grid(shape)),
            (f"{base}.{SCALE_2}", "F32", ()),
        ]
        if self.input_scale(name) is not None:
            out.append((f"{base}.{INPUT}", "F32", ()))
        return out

    def arrays(self, name, q):
        out = [
            pack_codes(q).reshape(q.shape[0], -1),
            np.asarray(q.scale).view(ml_dtypes.float8_e4m3fn),
            np.asarray(q.tensor_scale, np.float32).reshape(()),
        ]
        if name in self.inputs:
            out.append(np.asarray(self.inputs[name], np.float32).reshape(()))
        return out

    def review(self, jobs):
        super().review(jobs)
        quantized = [j.source for j in jobs if j.scheme is not None]
        if self.inputs and len(self.inputs) != len(quantized):
            raise LayoutError(
                "some NVFP4 weights have static input scales and some do not: ModelOpt's quant_algo "
                "is NVFP4 (every weight has one) or W4A16_NVFP4 (none)"
            )
        self.algo = "NVFP4" if self.inputs else "W4A16_NVFP4"

    def _quantization(self, jobs) -> dict:
        return {
            "quant_algo": self.algo,
            "kv_cache_quant_algo": None,
            "group_size": GROUP,
            "exclude_modules": ignored_modules(jobs),
        }

    def config(self, config, jobs):
        if not any(j.scheme is not None for j in jobs):
            return with_config(config, None)
        args = {"dynamic": False, "num_bits": 4, "type": "float", "group_size": GROUP}
        group = {"weights": args, "targets": ["Linear"]} | ({"input_activations": args} if ALGOS[self.algo] else {})
        return with_config(
            config,
            {
                "config_groups": {"group_0": group},
                "ignore": ignored_modules(jobs),
                "quant_algo": self.algo,
                "producer": self.producer(),
                "quant_method": "modelopt",
            },
        )

    @staticmethod
    def producer() -> dict:
        return {"name": "fp8port", "version": __version__}

    def side_files(self, plan):
        if not any(j.scheme is not None for j in plan.jobs):
            return {}
        return {HF_QUANT_CONFIG: {"producer": self.producer(), "quantization": self._quantization(plan.jobs)}}
