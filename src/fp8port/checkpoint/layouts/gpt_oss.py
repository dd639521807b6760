"""gpt-oss's MXFP4 layout (openai/gpt-oss-20b / -120b; transformers' Mxfp4 integration).

Only the MoE experts are quantized: per layer `...mlp.experts.gate_up_proj_blocks` U8 [E, 2I, H/32, 16]
and `..._scales` U8 [E, 2I, H/32] (E8M0 bytes), `down_proj_blocks` U8 [E, H, I/32, 16] and its scales;
biases and everything else dense. Each row of a `_blocks` tensor is LOW_FIRST packed E2M1 codes of
one output feature; gate_up rows are interleaved (even rows gate, odd rows up), which is also how the
dense model stores them, so nothing is reordered. The logical weight is transformers' parameter:
`...experts.gate_up_proj` [E, H, 2I] (in-features first), blocks of 32 along axis -2.
config.json: `quantization_config = {"quant_method": "mxfp4", "modules_to_not_convert": [...]}`.
OpenAI has not published the rule its checkpoint was quantized with; written with the preset given
(`mxfp4`: OCP FLOOR).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

import ml_dtypes
import numpy as np

from ...codec.packing import pack, unpack
from ...errors import CheckpointError, LayoutError
from ...quant import Scheme, get_preset
from ...quant.scheme import BlockKind, BlockShape
from ...quant.storage import e8m0_bytes, e8m0_values
from .base import LayoutHandler, LayoutName, StoredWeight, Writer, with_config
from .common import block_tensor, cannot_hold, checked, scale_storage

BLOCKS, SCALES = "_blocks", "_scales"
GROUP = 32  # E2M1 codes per scale byte
BLOCK = BlockShape(BlockKind.VECTOR, (GROUP,), axis=-2)  # along H of [E, H, 2I] (in-features first)
EXPERTS = re.compile(r"(^|\.)experts\.(gate_up_proj|down_proj)$")
FLOATS = ("BF16", "F16", "F32")
E2M1 = "float4_e2m1fn"


def _scheme() -> Scheme:
    return Scheme.build(E2M1, "floor", "1x32", storage="e8m0", profile="ocp-mx", axis=-2, name="gpt-oss/mxfp4")


class GptOss(LayoutHandler):
    name = LayoutName.GPT_OSS
    summary = (
        "experts X_blocks U8 [E, N, K/32, 16] (LOW_FIRST E2M1) + X_scales U8 [E, N, K/32] (E8M0); the rest "
        "dense; quant_method mxfp4"
    )
    loaders = (
        "transformers Mxfp4Config (dequantize=True on CPU; triton kernels on GPU)",
        "vLLM",
        "SGLang",
        "llama.cpp (through convert_hf_to_gguf: GGUF MXFP4)",
    )
    quant_methods = ("mxfp4",)

    def signature(self, ckpt):
        hit = next(
            (
                n
                for n, (_, i) in ckpt.tensors.items()
                if n.endswith(BLOCKS) and i.dtype == "U8" and n[: -len(BLOCKS)] + SCALES in ckpt.tensors
            ),
            None,
        )
        return f"no quantization_config, but gpt-oss MXFP4 tensors such as {hit!r}" if hit else None

    def weights(self, ckpt):
        scheme, out = _scheme(), {}
        for n, (f, info) in ckpt.tensors.items():
            if n.endswith(SCALES) and n[: -len(SCALES)] + BLOCKS not in ckpt.tensors:
                raise CheckpointError(f"{f}: scales {n!r} have no blocks {n[: -len(SCALES)] + BLOCKS!r}")
            if not n.endswith(BLOCKS):
                continue
            name, s = n[: -len(BLOCKS)], n[: -len(BLOCKS)] + SCALES
            if s not in ckpt.tensors:
                raise CheckpointError(f"{f}: blocks {n!r} have no scales {s!r}")
            if info.dtype != "U8" or len(info.shape) != 4 or info.shape[-1] != GROUP // 2:
                raise CheckpointError(
                    f"{f}: blocks {n!r} are {info.dtype}{list(info.shape)}; gpt-oss blocks are U8 "
                    f"[experts, out, in/{GROUP}, {GROUP // 2}]"
                )
            scale_storage(ckpt, s, ("U8",), "gpt-oss")
            e, rows, g, _ = info.shape
            if tuple(ckpt.info(s).shape) != (e, rows, g):
                raise CheckpointError(
                    f"{ckpt.tensors[s][0]}: scales {s!r} are {list(ckpt.info(s).shape)}; blocks "
                    f"{n!r} {list(info.shape)} need [{e}, {rows}, {g}]"
                )
            out[name] = StoredWeight(name, (e, g * GROUP, rows), scheme, {"codes": n, "scale": s})
        return out

    def read(self, ckpt, w):
        e, k, n = w.shape
        raw = np.ascontiguousarray(ckpt.read(w.parts["codes"])).view(np.uint8).reshape(e, n, k // 2)
        codes = np.ascontiguousarray(unpack(raw, E2M1).transpose(0, 2, 1))  # [E, N, K] -> transformers' [E, K, N]
        stored = np.ascontiguousarray(np.asarray(ckpt.read(w.parts["scale"])).view(np.uint8).transpose(0, 2, 1))
        s = checked(ckpt, w.parts["scale"], e8m0_values(stored))
        return block_tensor(codes, stored.view(ml_dtypes.float8_e8m0fnu), s, w)

    def describe(self, ckpt, weights):
        out = super().describe(ckpt, weights)
        out["preset"] = None  # OpenAI's rule is not published: no preset claims its bytes
        out["scales_all_powers_of_two"] = True if weights else None
        out["loaders"] = {
            self.loaders[0]: "loads it (its experts [E, in, out] transposed from the blocks)",
            self.loaders[1]: "loads it on GPUs (gpt-oss MXFP4 MoE kernels; not run here)",
            self.loaders[2]: "loads it on GPUs (not run here)",
            self.loaders[3]: "reads GGUF, not this: the converter moves nibbles only "
            "(fp8port.codec.packing.gguf_mxfp4_blocks), lossless",
            "fp8port": "load_quantized (experts dequantized one at a time), dequant, convert",
        }
        out["warnings"] = [
            "gate_up rows are interleaved (even rows gate, odd rows up): tools that split gate_up "
            "into halves (llm-compressor model_free_ptq) misread them",
            "OpenAI has not published the scale rule of its MXFP4 checkpoint; requantizing from BF16 gives other bytes",
        ]
        return out

    def writer(self, request, source):
        preset = get_preset(request.preset) if request.preset else None
        return GptOssWriter(self.name, request, source, preset)


@dataclass
class GptOssWriter(Writer):
    """Writes the 3-D expert tensors in MXFP4; every other tensor dense."""

    def scheme_for(self, name, dtype, shape, stored):
        req = self.request
        if not EXPERTS.search(name) or len(shape) != 3 or any(fnmatchcase(name, p) for p in req.exclude):
            return None
        if stored is None:
            if self.preset is None or req.requantize_only or dtype not in FLOATS:
                return None
            scheme = self.preset.weight.with_(block=BLOCK)
        else:
            scheme = self.preset.weight.with_(block=BLOCK) if self.preset else stored.scheme
        if req.block is not None:
            scheme = scheme.with_(block=req.block)
        if req.storage is not None:
            scheme = scheme.with_(storage=req.storage)
        return self.hold(name, shape, scheme)

    def hold(self, name, shape, scheme):
        b = scheme.block
        if (
            scheme.element.name != E2M1
            or len(shape) != 3
            or b.kind is not BlockKind.VECTOR
            or b.size != (GROUP,)
            or b.axis % 3 != 1
        ):
            raise cannot_hold(
                "gpt-oss",
                scheme,
                f"its experts are E2M1 in 1x{GROUP} blocks along the in-features of [experts, in, out]",
            )
        if not scheme.scale_rule.power_of_two or shape[1] % GROUP:
            raise cannot_hold(
                "gpt-oss",
                scheme,
                f"its scales are E8M0 bytes over in-features that are a multiple of {GROUP} ({list(shape)})",
            )
        return scheme.with_(storage="e8m0")

    def outputs(self, name, shape, scheme):
        e, k, n = shape
        return [(name + BLOCKS, "U8", (e, n, k // GROUP, GROUP // 2)), (name + SCALES, "U8", (e, n, k // GROUP))]

    def arrays(self, name, q):
        e, k, n = q.shape
        codes = pack(np.ascontiguousarray(np.asarray(q.codes, np.uint8).transpose(0, 2, 1)), E2M1)
        scales = e8m0_bytes(np.asarray(q.scale_fp32, np.float32)).transpose(0, 2, 1)
        return [codes.reshape(e, n, k // GROUP, GROUP // 2), np.ascontiguousarray(scales)]

    def review(self, jobs):
        if not any(j.scheme is not None for j in jobs):
            raise LayoutError(
                f"{self.source.ckpt.root}: the gpt-oss layout holds only MoE experts (3-D "
                "*.experts.gate_up_proj / down_proj, [experts, in, out]) in MXFP4, and this checkpoint "
                "has none to write"
                + ("" if self.preset else " (name --preset mxfp4 for a dense one)")
                + "; choose another layout (deepseek, compressed-tensors, fp8port)"
            )

    def config(self, config, jobs):
        keep = (
            self.source.ckpt.quantization_config.get("modules_to_not_convert")
            if self.source.layout is LayoutName.GPT_OSS
            else None
        )
        if not isinstance(keep, list):
            dense = [
                j.source[: -len(".weight")]
                for j in jobs
                if j.scheme is None and j.source.endswith(".weight") and len(j.outputs[0][2]) == 2
            ]
            keep = list(dict.fromkeys(re.sub(r"\.\d+\.", ".*.", m) for m in dense + ["lm_head"]))
        return with_config(config, {"quant_method": "mxfp4", "modules_to_not_convert": keep})
