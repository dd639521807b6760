"""msModelSlim's AscendV1 layout: what vLLM-Ascend and SGLang-on-Ascend load, written as msModelSlim writes it.

Files (shared/research/ascend-layout.md §1): `quant_model_description.json` (one quant type
per tensor plus global keys), `quant_model_weights.safetensors` or numbered shards with
`quant_model_weights.safetensors.index.json`, and config.json without quantization_config.
Types differ per tensor (§2): FLOAT copies, int8 / int4 / E4M3 per output channel (W8A8_DYNAMIC,
W8A16, W8A8 static, W4A8_DYNAMIC, WFP8AFP8_DYNAMIC), E4M3 or packed E2M1 codes with one E8M0 byte per
1x32 block along K (MX types). By default each type is quantized with msModelSlim 26.1.0's rule and the
folder laid out as its AscendV1Saver does (issue 24; tests/peers/test_msmodelslim.py proves the bytes).

types.py: the types, what each stores, the default rule per type; rules.py: what stays FLOAT, what is
fused, the write order; codec.py: weights to and from values; description.py: the description file;
inspect.py: loaders.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ....errors import ConversionError
from ....quant import Scheme
from ...folder import DESCRIPTION
from ...selection import quantizable
from ..base import (
    Action,
    LayoutHandler,
    LayoutName,
    Source,
    StoredWeight,
    Writer,
    WriteRequest,
    index_object,
    with_config,
)
from . import codec
from .description import INDEX, description, quantized_types, shard_names
from .inspect import describe
from .rules import (
    FLOAT_RULES,  # noqa: F401  (the loaders' float-tensor rules: the contract test reads them here)
    check_fits,
    check_groups,
    float_reason,
    layer_kind,
    module_order,  # noqa: F401
    mtp_layers,
)
from .types import LOADERS, PRIORITY, WRITABLE, AscendType, entries, logical, target  # noqa: F401

FLOAT = AscendType.FLOAT
EMBED = "model.embed_tokens.weight"


def _load_activations(path) -> tuple[dict, str]:
    try:
        raw = Path(path).read_bytes()
        data = json.loads(raw)
        assert isinstance(data, dict)
        acts = {m: (float(v["input_scale"]), float(v["input_offset"])) for m, v in data.items()}
    except (OSError, ValueError, AssertionError, KeyError, TypeError) as e:
        raise ConversionError(
            f"{path}: activation scales must be a JSON object "
            f'{{module: {{"input_scale": s, "input_offset": o}}}} ({type(e).__name__})'
        ) from None
    for m, (s, o) in acts.items():
        if not (math.isfinite(s) and s > 0 and o == round(o) and -128 <= o <= 127):
            raise ConversionError(
                f"{path}: {m}: input_scale must be finite and > 0 and input_offset an int8 value; got {s}, {o}"
            )
    return acts, hashlib.sha256(raw).hexdigest()


class Ascend(LayoutHandler):
    name = LayoutName.ASCEND
    summary = "quant_model_description.json + quant_model_weights*.safetensors, one quant type per tensor"
    loaders = ("vllm-ascend", "sglang")

    def detect(self, ckpt):
        if (ckpt.root / DESCRIPTION).is_file():  # what vLLM-Ascend and SGLang detect by (ascend-layout.md §3)
            return f"{DESCRIPTION} is present (what vLLM-Ascend and SGLang detect AscendV1 by)"
        return None

    def weights(self, ckpt):
        return {
            n: StoredWeight(n, logical(ckpt.info(n).shape, t), t.scheme, codec.parts(ckpt, n, t), label=t.value)
            for n, t in quantized_types(ckpt).items()
        }

    def read(self, ckpt, w):
        return codec.read(ckpt, w)

    def values(self, ckpt, w, dtype="float32"):
        return codec.values(ckpt, w).astype(dtype)

    def activation_scheme(self, ckpt, w):
        return AscendType.parse(w.label).activation

    def describe(self, ckpt, weights):
        return describe(ckpt, weights)

    def writer(self, request: WriteRequest, source: Source) -> AscendWriter:
        if request.preset is None:
            raise ConversionError(
                "--layout ascend needs --preset TYPE, one of: " + ", ".join(t.value for t in WRITABLE)
            )
        atype, scheme = target(request.preset, source.model_dtype)
        if source.layout is LayoutName.ASCEND:
            raise ConversionError(f"{source.ckpt.root} is already AscendV1; `fp8port dequant` it first to change types")
        if request.storage or request.block:
            raise ConversionError(
                f"--{'scale-dtype' if request.storage else 'block'} does not apply to --layout "
                "ascend (its blocks and scale dtypes are fixed per type)"
            )
        if atype is AscendType.W8A8 and not request.activation_scales:
            raise ConversionError(
                "W8A8 (static) needs calibrated input_scale/input_offset per Linear, which "
                "fp8port cannot compute without data (ascend-layout.md §4.4); pass "
                "--activation-scales FILE.json, or use W8A8_DYNAMIC"
            )
        w = AscendWriter(
            self.name,
            request,
            source,
            atype=atype,
            scheme=scheme,
            measures_error=True,
            index_name=INDEX,
            file_metadata=None,
        )
        w.deq_int64 = source.model_dtype != "BF16"  # msModelSlim deqscale2int64_by_dtype
        w.mtp = mtp_layers(source.ckpt.tensors, source.ckpt.config)
        if source.model_dtype == "F16" and ":" not in request.preset:
            w.notes.append(
                "msModelSlim computes scales in float16 on a float16 model; fp8port's msmodelslim-* rules "
                "model its bf16 and float32 arithmetic, so a scale may differ from its in the last bit"
            )
        if request.activation_scales:
            if atype is not AscendType.W8A8:
                raise ConversionError("--activation-scales is for --preset W8A8 (static)")
            w.activations, digest = _load_activations(request.activation_scales)
            w.notes.append(f"activation scales from {request.activation_scales} (sha256 {digest[:16]})")
        return w


@dataclass
class AscendWriter(Writer):
    """What `convert --layout ascend --preset TYPE[:PRESET]` writes: what msModelSlim's AscendV1Saver writes, a
    type per tensor recorded for the description, in its module order, lm_head cloned from a tied embedding."""

    atype: AscendType = AscendType.FLOAT
    scheme: Scheme | None = None  # what the weights are quantized with (`target`)
    types: dict[str, AscendType] = field(default_factory=dict)  # every source tensor -> its description entry
    deq_int64: bool = False  # W8A8 deq_scale as int64 fp32 bits (§2.1)
    activations: dict = field(default_factory=dict)  # module -> (input_scale, input_offset)
    mtp: set = field(default_factory=set)

    @property
    def label(self) -> str:
        return self.atype.value

    def scheme_for(self, name, dtype, shape, stored):
        req = self.request
        dense_dtype = "BF16" if stored else dtype  # a quantized source counts as the float matrix it holds
        if not quantizable(name, dense_dtype, shape, req.include, req.exclude) or float_reason(name, self.mtp):
            self.types[name] = AscendType.FLOAT
            return None
        t = self.atype
        if t is AscendType.W8A8 and layer_kind(name) == "moe":
            t = AscendType.W8A8_DYNAMIC  # W8A8 static has no MoE scheme (§2.1); msModelSlim mixes the same way
        check_fits(t, name, shape, f"{name[: -len('.weight')]}.bias" in self.source.ckpt.tensors, self.activations)
        self.types[name] = t
        return self.scheme

    def outputs(self, name, shape, scheme):
        return entries(self.types[name], name, shape, self.deq_int64)

    def encode(self, name, x, scheme, nonfinite):
        return codec.encode(self.types[name], np.asarray(x, np.float32), scheme, name, nonfinite)

    def arrays(self, name, q):
        return codec.arrays(self.types[name], name, q, self.activations.get(name[: -len(".weight")]), self.deq_int64)

    def report(self, name, q):
        return {"type": self.types[name].value}

    def review(self, jobs):
        check_groups(self.types)
        if self.atype is AscendType.W8A16 and any(
            layer_kind(n) == "moe" and t is not AscendType.FLOAT for n, t in self.types.items()
        ):
            raise ConversionError(
                "W8A16 has no MoE scheme in vLLM-Ascend or SGLang (§2.4, §3); use W8A8_DYNAMIC, "
                "or keep the experts FLOAT with --exclude '*.experts.*'"
            )
        lossy = sum(j.action is Action.REQUANTIZE and self.types[j.source] is AscendType.W8A8_MXFP8 for j in jobs)
        if lossy:
            self.notes.append(
                f"{lossy} FP8 weights have scales that are not powers of two (or blocks that are "
                "not 1xK-splittable): requantized to MXFP8, error per tensor in the summary"
            )

    def extra_copies(self):
        """msModelSlim writes lm_head.weight for tied embeddings ("so both keys exist for tie_word_embeddings")."""
        names, cfg = self.source.ckpt.tensors, self.source.ckpt.config or {}
        tied = cfg.get("tie_word_embeddings", True) and "lm_head.weight" not in names
        return [(EMBED, "lm_head.weight")] if tied and EMBED in names else []

    def arrange(self, jobs):
        """msModelSlim's order (rules.module_order), and float32 biases for quantized Linears (its saver writes
        `module.bias.to(torch.float32)`)."""
        out = []
        for j in sorted(jobs, key=lambda j: module_order(j.outputs[0][0])):
            if j.action is Action.COPY and j.source.endswith(".bias"):
                if self.types.get(j.source[: -len(".bias")] + ".weight", FLOAT) is not FLOAT:
                    ((n, _, shape),) = j.outputs
                    j = replace(j, outputs=((n, "F32", shape),))
            out.append(j)
        return out

    def config(self, config, jobs):
        """config.json as msModelSlim leaves it: unchanged, unless it has a quantization_config to remove."""
        if config is None:
            return None
        if "quantization_config" in config or "quantization_config" in (config.get("text_config") or {}):
            return json.dumps(with_config(config, None), indent=2)
        return (self.source.ckpt.root / "config.json").read_text()

    def side_files(self, plan):
        types = {n: self.types[j.source] for j in plan.jobs for n, _, _ in j.outputs}
        return {DESCRIPTION: json.dumps(description(types), indent=4)}

    def index(self, plan):
        """Always written (also for one shard), in the description's order, as msModelSlim's saver does."""
        return json.dumps(index_object(plan), indent=2)

    def shard_names(self, n):
        return shard_names(n)
