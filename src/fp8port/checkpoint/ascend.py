"""msModelSlim's AscendV1 layout: what vLLM-Ascend and SGLang-on-Ascend load.

Files (shared/research/ascend-layout.md §1): `quant_model_description.json` (one quant type
per tensor plus global keys), `quant_model_weights.safetensors` or numbered shards with
`quant_model_weights.safetensors.index.json`, and config.json without quantization_config.
Types differ per tensor (§2): FLOAT copies, int8 per output channel (W8A8_DYNAMIC, W8A16,
W8A8 static), E4M3 or packed E2M1 codes with one E8M0 byte per 1x32 block along K (MX types).

Writing is planned here and executed by convert's pipeline (staging, journal, resume);
reading (detection, per-tensor types, dequantization, loader checks) serves dequant,
diff, inspect and --verify.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import ml_dtypes
import numpy as np

from ..codec.packing import pack, unpack
from ..errors import CheckpointError, ConversionError, NonFiniteError, UnknownNameError
from ..quant import QuantizedTensor, Role, dequantize, get_preset, quantize
from ..quant import storage as scale_store
from ..quant.tensor import Framework
from . import plan as cv
from .produce import sqnr
from .folder import ASCEND_INDEX, ASCEND_SINGLE, DESCRIPTION, Checkpoint
from .layouts import (Layout, all_powers_of_two, check_grids, detect, logical_shape, quantized_weights,
                      read_quantized, reader_scheme)
from .safetensors_io import DTYPES
from .selection import quantizable
from .staging import write_json_atomic

VERSION = "1.0.0"
MX_GROUP = 32


class AscendType(enum.Enum):
    """Per-tensor quant types of the description file (§1.2), low to high priority."""

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
    def parse(cls, value) -> "AscendType":
        if isinstance(value, cls):
            return value
        key = str(value).strip().upper().replace("-", "_")
        for m in cls:
            if key == m.value:
                return m
        raise UnknownNameError("AscendV1 quant type", value, [m.value for m in WRITABLE])

    @classmethod
    def writable(cls, value) -> "AscendType":
        t = cls.parse(value)
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
    def per_channel(self) -> bool:
        return self in (AscendType.W8A8_DYNAMIC, AscendType.W8A16, AscendType.W8A8_MIX,
                        AscendType.WFP8AFP8_DYNAMIC)


PRIORITY = list(AscendType)[:-1]
WRITABLE = (AscendType.W8A8_MXFP8, AscendType.W4A8_MXFP, AscendType.W4A4_MXFP4, AscendType.W8A8_DYNAMIC,
            AscendType.W8A16, AscendType.W8A8)
MX_PRESET = {AscendType.W8A8_MXFP8: "mxfp8", AscendType.W4A8_MXFP: "mxfp4", AscendType.W4A4_MXFP4: "mxfp4"}

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

# What stays FLOAT in a DeepSeek-style model (§2.8, §4.6), with the reason a loader needs it.
FLOAT_RULES = (
    ("*.kv_b_proj.*", "vLLM-Ascend MLA splits kv_b_proj into W_UK/W_UV and asserts it is unquantized (§2.8)"),
    ("*.mlp.gate.*", "router gate kept float by msModelSlim's DeepSeek recipes (§2.8)"),
    ("*e_score_correction_bias*", "router bias kept float (§2.8)"),
    ("*norm*", "norms are FLOAT (§2.8)"),
    ("*embed*", "embeddings are FLOAT (§2.8)"),
    ("lm_head.*", "lm_head is FLOAT (§2.8)"),
    ("*.shared_head.*", "the MTP head is FLOAT (§2.8)"),
    ("*.indexer.*", "DeepSeek-V3.2 indexer projections are excluded (§4.6)"),
)
MTP_MARKERS = ("enorm", "hnorm", "eh_proj", "shared_head")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_EXPERT = re.compile(r"\.mlp\.experts\.\d+\.")


def float_reason(name: str, mtp: set[int]) -> str | None:
    """Why a tensor must stay FLOAT, or None if a loader accepts it quantized."""
    m = _LAYER.match(name)
    if m and int(m.group(1)) in mtp:
        return "the MTP layer is FLOAT: vLLM-Ascend's deepseek_mtp expects it so (§2.8)"
    return next((why for pat, why in FLOAT_RULES if fnmatchcase(name, pat)), None)


def mtp_layers(names, config: dict | None) -> set[int]:
    """DeepSeek's multi-token-prediction layers: the ones after num_hidden_layers, or any layer
    holding MTP-only modules (enorm, hnorm, eh_proj, shared_head)."""
    out = set()
    cfg = config or {}
    n, k = cfg.get("num_hidden_layers"), cfg.get("num_nextn_predict_layers") or 0
    if isinstance(n, int) and isinstance(k, int):
        out.update(range(n, n + k))
    for name in names:
        m = _LAYER.match(name)
        if m and any(f".{mark}." in name for mark in MTP_MARKERS):
            out.add(int(m.group(1)))
    return out


def layer_kind(name: str) -> str:
    return "moe" if _EXPERT.search(name) else "linear"


def fused_group(name: str) -> str | None:
    """Modules a loader fuses, which must share one type (§2 conventions, §7.4)."""
    base = name.rsplit(".", 1)[0]
    for members, tag in ((("q_proj", "k_proj", "v_proj"), "qkv"), (("gate_proj", "up_proj"), "gate_up"),
                         (("q_a_proj", "kv_a_proj_with_mqa"), "fused_qkv_a")):
        for m in members:
            if base.endswith("." + m):
                prefix = base[: -len(m) - 1]
                if _EXPERT.search(name):  # all experts of one MoE layer: one type
                    return _EXPERT.split(name)[0] + ".mlp.experts"
                return f"{prefix}:{tag}"
    if _EXPERT.search(name):
        return _EXPERT.split(name)[0] + ".mlp.experts"
    return None


# ---- tensor contract per type (§2) ------------------------------------------------------------


def entries(t: AscendType, name: str, shape, float_dtype: str = "BF16", deq_int64: bool = False):
    """(tensor name, safetensors dtype, shape) written for weight `name` [N, K] in type t."""
    n, k = shape
    base = name[: -len(".weight")]
    if t is AscendType.W8A8_MXFP8:
        return [(name, "F8_E4M3", (n, k)), (f"{base}.weight_scale", "U8", (n, math.ceil(k / MX_GROUP)))]
    if t in (AscendType.W4A8_MXFP, AscendType.W4A4_MXFP4):
        return [(name, "U8", (n, k // 2)), (f"{base}.weight_scale", "U8", (n, math.ceil(k / MX_GROUP)))]
    if t in (AscendType.W8A8_DYNAMIC, AscendType.W8A16):
        return [(name, "I8", (n, k)), (f"{base}.weight_scale", "F32", (n, 1)),
                (f"{base}.weight_offset", "F32", (n, 1))]
    if t is AscendType.W8A8:
        return [(name, "I8", (n, k)), (f"{base}.input_scale", "F32", (1,)), (f"{base}.input_offset", "F32", (1,)),
                (f"{base}.deq_scale", "I64" if deq_int64 else "F32", (n,)), (f"{base}.quant_bias", "I32", (n,))]
    raise ConversionError(f"{t.value} is not written")


def bf16_ceil(s: np.ndarray) -> np.ndarray:
    """The smallest bf16 value >= s: the loaders hold weight_scale in bf16 (§2.2), and rounding
    up keeps |w / s| <= 127, so no channel clips."""
    b = np.asarray(s, np.float32).astype(ml_dtypes.bfloat16)
    low = b.astype(np.float32) < s
    b = np.where(low, np.nextafter(b, np.array(np.inf, ml_dtypes.bfloat16)), b)
    return b.astype(np.float32)


def int8_per_channel(w: np.ndarray, bf16_scale: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output row: scale amax/127 (floored at fp32 eps, as msModelSlim does),
    codes rounded half to even."""
    amax = np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    s = np.maximum(amax / np.float32(127), np.finfo(np.float32).eps).astype(np.float32)
    if bf16_scale:
        s = bf16_ceil(s)
    q = np.clip(np.rint(w / s[:, None]), -128, 127).astype(np.int8)
    return q, s


def mx_quantized(codes: np.ndarray, scale_bytes: np.ndarray, shape, t: AscendType) -> QuantizedTensor:
    scheme = get_preset(MX_PRESET[t]).weight
    return QuantizedTensor(codes=codes, scale=scale_bytes.view(ml_dtypes.float8_e8m0fnu),
                           scale_fp32=scale_store.e8m0_values(scale_bytes), shape=tuple(shape), scheme=scheme,
                           role=Role.WEIGHT, src_dtype="float32", framework=Framework.NUMPY)


def _check_e8m0(scale_bytes: np.ndarray, where: str) -> None:
    if (scale_bytes == 0xFF).any():
        raise NonFiniteError(f"{where}: a block has a NaN scale (E8M0 0xFF), which Ascend loaders refuse "
                             "(§2.6); fix the non-finite weights (--nonfinite zero)")


# ---- the writer's plan -------------------------------------------------------------------------


@dataclass
class AscendTarget:
    """What `convert --layout ascend` writes; stands where convert's Target does."""

    atype: AscendType
    types: dict[str, AscendType]  # every written tensor -> its description entry
    float_dtype: str  # dense dtype of FLOAT tensors dequantized from an FP8 source
    deq_int64: bool = False  # W8A8 deq_scale as int64 fp32 bits (fp16 models, §2.1)
    activations: dict = field(default_factory=dict)  # module -> (input_scale, input_offset)
    layout: Layout = Layout.ASCEND

    @property
    def preset(self) -> str:
        return self.atype.value


def _model_dtype(config: dict | None) -> str:
    return {"float16": "F16", "float32": "F32"}.get(str((config or {}).get("torch_dtype", "bfloat16")), "BF16")


def _load_activations(path) -> tuple[dict, str]:
    try:
        raw = Path(path).read_bytes()
        data = json.loads(raw)
        assert isinstance(data, dict)
        acts = {m: (float(v["input_scale"]), float(v["input_offset"])) for m, v in data.items()}
    except (OSError, ValueError, AssertionError, KeyError, TypeError) as e:
        raise ConversionError(f"{path}: activation scales must be a JSON object "
                              f'{{module: {{"input_scale": s, "input_offset": o}}}} ({type(e).__name__})') from None
    for m, (s, o) in acts.items():
        if not (math.isfinite(s) and s > 0 and o == round(o) and -128 <= o <= 127):
            raise ConversionError(f"{path}: {m}: input_scale must be finite and > 0 and input_offset an "
                                  f"int8 value; got {s}, {o}")
    return acts, hashlib.sha256(raw).hexdigest()


def _replicable(ckpt, scale_name: str, scheme) -> bool:
    """UE8M0 blocks whose K-extent splits into 1x32: the MXFP8 re-layout is exact (§4.3)."""
    if scheme.element.name != "float8_e4m3fn" or len(scheme.block.size) != 2 or scheme.block.size[1] % MX_GROUP:
        return False
    info = ckpt.info(scale_name)
    return info.dtype == "F8_E8M0" or all_powers_of_two(ckpt.read(scale_name).astype(np.float32))


def plan_convert(ckpt: Checkpoint, opts) -> "cv.Plan":
    atype = AscendType.writable(opts.preset)
    layout = detect(ckpt)
    if layout is Layout.ASCEND:
        raise ConversionError(f"{ckpt.root} is already AscendV1; `fp8port dequant` it first to change types")
    if opts.scale_dtype:
        raise ConversionError("--scale-dtype does not apply to --layout ascend (its scale dtypes are fixed "
                              "per type)")
    if atype is AscendType.W8A8 and not opts.activation_scales:
        raise ConversionError("W8A8 (static) needs calibrated input_scale/input_offset per Linear, which "
                              "fp8port cannot compute without data (ascend-layout.md §4.4); pass "
                              "--activation-scales FILE.json, or use W8A8_DYNAMIC")
    pairs = quantized_weights(ckpt, layout) if layout is not Layout.DENSE else {}
    companions = set(pairs.values()) | {n for n in ckpt.tensors if n.endswith(".weight_tensor_scale")}
    scheme = reader_scheme(ckpt, layout) if pairs else None
    if pairs:
        check_grids(ckpt, pairs, scheme)
    mtp = mtp_layers(ckpt.tensors, ckpt.config)
    float_dtype = _model_dtype(ckpt.config)
    target = AscendTarget(atype, {}, float_dtype, deq_int64=float_dtype == "F16")
    notes = []
    if opts.activation_scales:
        if atype is not AscendType.W8A8:
            raise ConversionError("--activation-scales is for --preset W8A8 (static)")
        target.activations, digest = _load_activations(opts.activation_scales)
        notes.append(f"activation scales from {opts.activation_scales} (sha256 {digest[:16]})")
    jobs, lossy_fp8 = [], 0
    for name, (_, info) in ckpt.tensors.items():
        if name in companions:
            continue
        quant_src = name in pairs
        shape = logical_shape(info, scheme) if quant_src else info.shape
        dtype = "BF16" if quant_src else info.dtype
        wanted = quantizable(name, dtype, shape, opts.include, opts.exclude) and float_reason(name, mtp) is None
        if not wanted:
            target.types[name] = AscendType.FLOAT
            if quant_src:  # e.g. DeepSeek's FP8 kv_b_proj and MTP layer: loaders want them dense
                jobs.append(cv.Job(cv.Action.DEQUANTIZE, name, pairs[name], ((name, float_dtype, tuple(shape)),)))
            else:
                jobs.append(cv.Job(cv.Action.COPY, name, None, ((name, info.dtype, info.shape),)))
            continue
        t = atype
        if t is AscendType.W8A8 and layer_kind(name) == "moe":
            t = AscendType.W8A8_DYNAMIC  # W8A8 static has no MoE scheme (§2.1); msModelSlim mixes the same way
        _check_fits(t, name, shape, ckpt, target)
        outs = entries(t, name, shape, float_dtype, target.deq_int64)
        if not quant_src:
            action = cv.Action.QUANTIZE
        elif t is AscendType.W8A8_MXFP8 and _replicable(ckpt, pairs[name], scheme):
            action = cv.Action.REPLICATE
        elif t is AscendType.W8A8_MXFP8 and scheme.block.size[-1] % MX_GROUP and all_powers_of_two(
                ckpt.read(pairs[name]).astype(np.float32)):
            raise ConversionError(f"{name}: source blocks {scheme.block} do not split into 1x{MX_GROUP} blocks, so "
                                  "the W8A8_MXFP8 re-layout would not be exact; `fp8port dequant` first to "
                                  "requantize on purpose")
        else:
            action = cv.Action.REQUANTIZE
            lossy_fp8 += t is AscendType.W8A8_MXFP8
        jobs.append(cv.Job(action, name, pairs.get(name), tuple(outs)))
        for n, _, _ in outs:
            target.types[n] = t
    _check_groups(target.types)
    if atype is AscendType.W8A16 and any(layer_kind(n) == "moe" and t is not AscendType.FLOAT
                                         for n, t in target.types.items()):
        raise ConversionError("W8A16 has no MoE scheme in vLLM-Ascend or SGLang (§2.4, §3); use W8A8_DYNAMIC, "
                              "or keep the experts FLOAT with --exclude '*.experts.*'")
    if lossy_fp8:
        notes.append(f"{lossy_fp8} FP8 weights have scales that are not powers of two (or blocks that are "
                     "not 1xK-splittable): requantized to MXFP8, error per tensor in the summary")
    if not any(t is not AscendType.FLOAT for t in target.types.values()):
        notes.append("no tensor matched the quantization rules: every tensor is FLOAT")
    config = _strip_quant_config(ckpt.config)
    shards, _ = cv._shard(jobs, opts.shard_size)
    plan = cv.Plan(ckpt.root, opts, jobs, shards, shard_names(len(shards)), config, target, layout)
    plan.notes.extend(notes)
    return plan


def _check_fits(t: AscendType, name: str, shape, ckpt, target: AscendTarget) -> None:
    n, k = shape
    if t in (AscendType.W4A8_MXFP, AscendType.W4A4_MXFP4) and k % 2:
        raise ConversionError(f"{name} {list(shape)}: K = {k} is odd, so its E2M1 codes do not fill whole bytes "
                              "along K (two per byte, §2.7); keep it FLOAT with --exclude or choose W8A8_MXFP8")
    base = name[: -len(".weight")]
    if t is AscendType.W8A8:
        if base not in target.activations:
            raise ConversionError(f"{name}: no activation scales for {base!r} in --activation-scales; W8A8 "
                                  "(static) needs input_scale and input_offset for every quantized Linear")
        if f"{base}.bias" in ckpt.tensors:
            raise ConversionError(f"{name}: has a bias; how the loaders combine it with W8A8's quant_bias is "
                                  "unverified (§2.1), so fp8port does not write it; use W8A8_DYNAMIC")


def _check_groups(types: dict[str, AscendType]) -> None:
    seen: dict[str, tuple[str, AscendType]] = {}
    for name, t in types.items():
        if not name.endswith(".weight"):
            continue
        g = fused_group(name)
        if g is None:
            continue
        if g in seen and seen[g][1] is not t:
            raise ConversionError(f"{name} would be {t.value} but {seen[g][0]} is {seen[g][1].value}: the loaders "
                                  "fuse these modules and need one type (§2); adjust --include/--exclude")
        seen.setdefault(g, (name, t))


def _strip_quant_config(config: dict | None) -> dict | None:
    if config is None:
        return None
    out = {k: v for k, v in config.items() if k != "quantization_config"}
    if isinstance(out.get("text_config"), dict):
        out["text_config"] = {k: v for k, v in out["text_config"].items() if k != "quantization_config"}
    return out


def shard_names(n: int) -> list[str]:
    return [ASCEND_SINGLE] if n == 1 else [f"quant_model_weights-{i + 1:05d}-of-{n:05d}.safetensors"
                                           for i in range(n)]


def description(target: AscendTarget) -> dict:
    present = {t for t in target.types.values()} | {AscendType.FLOAT}
    top = max(present, key=PRIORITY.index)
    mx = any(t.mx for t in present)
    desc = {n: t.value for n, t in target.types.items()}
    desc.update(model_quant_type=top.value, version=VERSION, group_size=MX_GROUP if mx else 0,
                metadata={}, optional={})
    return desc


def write_metadata(folder: Path, plan) -> None:
    """The description file and, for shards, msModelSlim's index name (§1.1)."""
    write_json_atomic(folder / DESCRIPTION, description(plan.target))
    if len(plan.shard_names) > 1:
        weight_map = {n: plan.shard_names[si] for si, idx in enumerate(plan.shards)
                      for ji in idx for n, _, _ in plan.jobs[ji].outputs}
        total = sum(j.nbytes for j in plan.jobs)
        write_json_atomic(folder / ASCEND_INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})


# ---- producing tensors -------------------------------------------------------------------------


def _source_values(ckpt, job, plan) -> np.ndarray:
    """A source weight in float32: the dense tensor, or the exact dequantization of its blocks."""
    if job.scale is None:
        x = ckpt.read(job.source)
        if cv.NonFinitePolicy.parse(plan.options.nonfinite) is cv.NonFinitePolicy.ZERO:
            x = np.where(np.isfinite(x.astype(np.float32)), x.astype(np.float32), 0)
        return np.asarray(x, np.float32)
    q = read_quantized(ckpt, job.source, job.scale, plan.read_layout, reader_scheme(ckpt, plan.read_layout))
    return np.asarray(dequantize(q, "float32"), np.float32)


def _encode(t: AscendType, w: np.ndarray, name: str, target: AscendTarget, policy) -> tuple[list, np.ndarray]:
    """The arrays of `entries` for float32 weight w, and what a loader will compute from them."""
    if not np.isfinite(w).all():
        if cv.NonFinitePolicy.parse(policy) is cv.NonFinitePolicy.ERROR:
            raise NonFiniteError(f"{name}: has NaN/Inf values (use --nonfinite zero)")
        if not t.mx:
            raise NonFiniteError(f"{name}: NaN/Inf cannot be stored in int8 {t.value} (use --nonfinite zero)")
    if t.mx:
        q = quantize(w, get_preset(MX_PRESET[t]).weight, role="weight", nonfinite="propagate")
        sb = np.asarray(q.scale).view(np.uint8)
        _check_e8m0(sb, name)
        codes = np.asarray(q.codes, np.uint8)
        if t is not AscendType.W8A8_MXFP8:  # low nibble first along K; K is even, so flat packing = per row
            codes = pack(codes.reshape(-1), q.scheme.element).reshape(w.shape[0], w.shape[1] // 2)
        return [codes, sb], np.asarray(dequantize(q, "float32"))
    q, s = int8_per_channel(w, bf16_scale=t is not AscendType.W8A8)
    deq = q.astype(np.float32) * s[:, None]
    if t is AscendType.W8A8:
        base = name[: -len(".weight")]
        in_s, in_o = target.activations[base]
        deq_scale = (np.float32(in_s) * s).astype(np.float32)
        qb = np.rint(-np.float64(in_o) * q.astype(np.int64).sum(axis=1)).astype(np.int32)
        if target.deq_int64:  # fp32 bits sign-extended into int64 (§2.1 deqscale2int64)
            deq_scale = deq_scale.view(np.int32).astype(np.int64)
        return [q, np.array([in_s], np.float32), np.array([in_o], np.float32), deq_scale, qb], deq
    return [q, s[:, None], np.zeros((w.shape[0], 1), np.float32)], deq


def _replicate(ckpt, job, plan) -> list[np.ndarray]:
    """UE8M0 (bm x bn) blocks -> one E8M0 byte per 1x32 block: codes kept, bytes copied (§4.3)."""
    scheme = reader_scheme(ckpt, plan.read_layout)
    q = read_quantized(ckpt, job.source, job.scale, plan.read_layout, scheme)
    sb = scale_store.e8m0_bytes(np.asarray(q.scale_fp32, np.float32))
    _check_e8m0(sb, job.source)
    n, k = q.shape
    bm, bn = scheme.block.size
    rows = np.arange(n) // bm
    cols = (np.arange(math.ceil(k / MX_GROUP)) * MX_GROUP) // bn
    return [np.asarray(q.codes, np.uint8), np.ascontiguousarray(sb[rows][:, cols])]


def produce(job, ckpt, plan) -> tuple[list[np.ndarray], dict]:
    """convert's produce() for jobs that write or read the AscendV1 layout."""
    if job.action is cv.Action.COPY:
        return [ckpt.read(job.source)], {}
    if job.action is cv.Action.DEQUANTIZE:
        out_dtype = job.outputs[0][1]
        if plan.read_layout is Layout.ASCEND:
            w = dequantize_weight(ckpt, job.source)
        else:
            w = _source_values(ckpt, job, plan)
        return [w.astype(DTYPES[out_dtype][0])], {}
    if job.action is cv.Action.REPLICATE:
        return _replicate(ckpt, job, plan), {"exact": True}
    target: AscendTarget = plan.target
    w = _source_values(ckpt, job, plan)
    t = target.types[job.source]
    arrays, deq = _encode(t, w, job.source, target, plan.options.nonfinite)
    err = deq.astype(np.float64) - w
    fin = np.isfinite(err)
    return arrays, {"type": t.value, "sqnr_db": sqnr(w[fin], err[fin]),
                    "max_abs_error": float(np.abs(err[fin]).max()) if fin.any() else 0.0}


# ---- reading -----------------------------------------------------------------------------------


def read_description(ckpt) -> dict:
    path = ckpt.root / DESCRIPTION
    try:
        desc = json.loads(path.read_text())
    except (OSError, ValueError):
        raise CheckpointError(f"{path}: not valid JSON") from None
    if not isinstance(desc, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return desc


def tensor_types(ckpt) -> dict[str, str]:
    """tensor name -> its type string (as written: unknown names are kept for inspect to report)."""
    desc = read_description(ckpt)
    return {n: v for n, v in desc.items() if n in ckpt.tensors and isinstance(v, str)}


def weights(ckpt) -> dict[str, AscendType]:
    """Quantized weights (not FLOAT) -> their type; companions are the rest of their module."""
    out = {}
    for n, v in tensor_types(ckpt).items():
        if n.endswith(".weight") and v != "FLOAT":
            try:
                out[n] = AscendType.parse(v)
            except UnknownNameError:
                raise CheckpointError(f"{ckpt.root / DESCRIPTION}: {n!r} has type {v!r}, which fp8port does not "
                                      "read") from None
    return out


COMPANIONS = ("weight_scale", "weight_offset", "input_scale", "input_offset", "deq_scale", "quant_bias",
              "weight_dual_scale")


def companions(ckpt, quantized: dict | None = None) -> set[str]:
    quantized = weights(ckpt) if quantized is None else quantized
    return {f"{w[: -len('.weight')]}.{c}" for w in quantized for c in COMPANIONS} & set(ckpt.tensors)


def scale_of(name: str, t: AscendType) -> str:
    return f"{name[: -len('.weight')]}.{'deq_scale' if t is AscendType.W8A8 else 'weight_scale'}"


def logical(ckpt, name: str, t: AscendType) -> tuple[int, ...]:
    shape = ckpt.info(name).shape
    return (shape[0], shape[1] * 2) if t in (AscendType.W4A8_MXFP, AscendType.W4A4_MXFP4) else tuple(shape)


def _need(ckpt, name: str, dtypes: tuple[str, ...], shape) -> np.ndarray:
    if name not in ckpt.tensors:
        raise CheckpointError(f"{ckpt.root}: tensor {name!r} is missing")
    info = ckpt.info(name)
    if info.dtype not in dtypes or tuple(info.shape) != tuple(shape):
        raise CheckpointError(f"{ckpt.tensors[name][0]}: {name!r} is {info.dtype}{list(info.shape)}, expected "
                              f"{'/'.join(dtypes)}{list(shape)}")
    return ckpt.read(name)


def dequantize_weight(ckpt, name: str, t: AscendType | None = None) -> np.ndarray:
    """One quantized AscendV1 weight as float32 values (what the loaders compute)."""
    t = t or weights(ckpt)[name]
    base = name[: -len(".weight")]
    n, k = logical(ckpt, name, t)
    if t.mx:
        codes = ckpt.read(name).view(np.uint8)
        if t is not AscendType.W8A8_MXFP8:
            codes = unpack(codes.reshape(-1), get_preset("mxfp4").weight.element).reshape(n, k)
        sb = _need(ckpt, base + ".weight_scale", ("U8", "F8_E8M0"), (n, math.ceil(k / MX_GROUP))).view(np.uint8)
        _check_e8m0(sb, f"{ckpt.tensors[name][0]}: {base}.weight_scale")
        return np.asarray(dequantize(mx_quantized(codes, sb, (n, k), t), "float32"), np.float32)
    if t is AscendType.W8A8:
        q = _need(ckpt, name, ("I8",), (n, k)).astype(np.float32)
        deq = _need(ckpt, base + ".deq_scale", ("F32", "I64"), (n,))
        if deq.dtype == np.int64:  # low 32 bits hold the fp32 pattern
            deq = deq.astype(np.int32).view(np.float32)
        in_s = _need(ckpt, base + ".input_scale", ("F32", "BF16", "F16"), (1,)).astype(np.float32)
        return q * (deq.astype(np.float32) / in_s[0])[:, None]
    if t.per_channel:
        q = ckpt.read(name).astype(np.float32)
        s = _need(ckpt, base + ".weight_scale", ("F32", "BF16", "F16"), (n, 1)).astype(np.float32)
        off = ckpt.read(base + ".weight_offset").astype(np.float32) if base + ".weight_offset" in ckpt.tensors else 0
        return (q - off) * s
    raise CheckpointError(f"{ckpt.tensors[name][0]}: {name!r} is {t.value}, which fp8port does not read")


def plan_dequant(ckpt: Checkpoint, opts) -> "cv.Plan":
    quantized = weights(ckpt)
    skip = companions(ckpt, quantized)
    out_dtype = cv.DENSE[opts.dtype][0]
    jobs = []
    for name, (_, info) in ckpt.tensors.items():
        if name in quantized:
            t = quantized[name]
            jobs.append(cv.Job(cv.Action.DEQUANTIZE, name, scale_of(name, t), ((name, out_dtype, logical(ckpt, name, t)),)))
        elif name not in skip:
            jobs.append(cv.Job(cv.Action.COPY, name, None, ((name, info.dtype, info.shape),)))
    shards, names = cv._shard(jobs, opts.shard_size)
    return cv.Plan(ckpt.root, opts, jobs, shards, names, _strip_quant_config(ckpt.config), None, Layout.ASCEND)


def values(ckpt, name: str, quantized: dict) -> np.ndarray:
    return dequantize_weight(ckpt, name, quantized[name]) if name in quantized else ckpt.read(name).astype(np.float32)


def verify_output(src, out, plan) -> dict:
    """--verify for conversions into or out of AscendV1: bytes for copies, exact values where the
    path is lossless (re-layouts, dequantization), error statistics where it is not."""
    failures, stats = [], {}
    into = plan.target is not None
    out_q = weights(out) if into else {}
    src_q = weights(src) if plan.read_layout is Layout.ASCEND else {}
    for job in plan.jobs:
        n = job.source
        if job.action is cv.Action.COPY:
            if not np.array_equal(src.read(n).view(np.uint8), out.read(n).view(np.uint8)):
                failures.append(f"{n}: copy differs")
            continue
        got = values(out, n, out_q)
        if plan.read_layout is Layout.ASCEND:
            ref = values(src, n, src_q)
        else:
            ref = _source_values(src, job, plan)
        if job.action is cv.Action.DEQUANTIZE:  # compare in the dense dtype written
            ref = ref.astype(DTYPES[job.outputs[0][1]][0]).astype(np.float32)
        exact = bool(np.array_equal(got, ref, equal_nan=True))
        err = got.astype(np.float64) - ref
        stats[n] = {"exact": exact, "max_abs_error": float(np.nanmax(np.abs(err))) if err.size else 0.0,
                    "sqnr_db": sqnr(ref, np.nan_to_num(err))}
        if job.action in (cv.Action.DEQUANTIZE, cv.Action.REPLICATE) and not exact:
            failures.append(f"{n}: expected an exact round trip, max error {stats[n]['max_abs_error']:.3g}")
    return {"ok": not failures, "failures": failures, "tensors": stats}


# ---- inspect ------------------------------------------------------------------------------------


def inspect_info(ckpt) -> dict:
    """Types per tensor, which loaders accept the file, and what would break them."""
    desc = read_description(ckpt)
    types = tensor_types(ckpt)
    warnings, refuse = [], {name: [] for name in LOADERS}
    mtp = mtp_layers(ckpt.tensors, ckpt.config)
    missing = [n for n in ckpt.tensors if n not in desc and n.endswith(".weight")]
    if missing:
        for r in refuse.values():
            r.append(f"{len(missing)} weights have no description entry (e.g. {missing[0]})")
    counts: dict[str, int] = {}
    quantized = {}
    for n, v in types.items():
        if not n.endswith(".weight"):
            continue
        counts[v] = counts.get(v, 0) + 1
        if v == "FLOAT":
            continue
        quantized[n] = v
        if v == AscendType.WFP8AFP8_DYNAMIC.value:
            continue
        why = float_reason(n, mtp)
        if why:
            warnings.append(f"{n} is {v} but should be FLOAT: {why}")
            if ".kv_b_proj." in n:
                refuse["vllm-ascend"].append(f"{n} is quantized: {why}")
        for loader, reg in LOADERS.items():
            if v not in reg[layer_kind(n)]:
                refuse[loader].append(f"no {layer_kind(n)} scheme for {v} (e.g. {n})")
    if AscendType.WFP8AFP8_DYNAMIC.value in counts:
        msg = ("WFP8AFP8_DYNAMIC: msModelSlim writes this name but vLLM-Ascend registers W8A8FP8_DYNAMIC and "
               "SGLang neither, so both refuse it (§2.5)")
        warnings.append(msg)
        for r in refuse.values():
            r.append(msg)
    groups: dict[str, set] = {}
    for n, v in types.items():
        if n.endswith(".weight") and fused_group(n):
            groups.setdefault(fused_group(n), set()).add(v)
    for g, vs in groups.items():
        if len(vs) > 1:
            warnings.append(f"{g}: fused modules have different types {sorted(vs)}; loaders need one (§2)")
    mx = [n for n, v in quantized.items() if v in ("W8A8_MXFP8", "W4A8_MXFP", "W4A4_MXFP4")]
    if mx and desc.get("group_size") != MX_GROUP:
        warnings.append(f"group_size is {desc.get('group_size')!r}; MX types need 32 (§2.6)")
    odd = [n for n in mx if logical(ckpt, n, AscendType.parse(quantized[n]))[1] % 64]
    if odd:
        warnings.append(f"{len(odd)} MX weights have K not a multiple of 64 (e.g. {odd[0]}): SGLang reshapes "
                        "the scales in pairs without padding (§2.6)")
    if ckpt.quantization_config:
        warnings.append("config.json still has quantization_config; vLLM may take the FP8 path (§1.4)")
    for key in ("model_quant_type", "version"):
        if key not in desc:
            warnings.append(f"{DESCRIPTION} has no {key!r} (§1.2)")
    unknown = sorted({v for v in types.values() if v not in AscendType._value2member_map_})
    if unknown:
        warnings.append(f"types fp8port does not read: {unknown}")
    scales = companions(ckpt, {n: None for n in quantized})
    return {
        "preset": desc.get("model_quant_type"), "quantized": len(quantized),
        "element": ", ".join(f"{t} x{c}" for t, c in sorted(counts.items()) if t != "FLOAT") or "none",
        "block": "1x32 along K (MX)" if mx else "one scale per output channel",
        "scale_storage": sorted({ckpt.info(s).dtype for s in scales}),
        "scales_all_powers_of_two": None,
        "dense_tensors": sum(v == "FLOAT" for v in types.values()),
        "dense_examples": [n for n, v in types.items() if v == "FLOAT"][:8],
        "parameters": int(sum(math.prod(logical(ckpt, n, AscendType.parse(v)) if n in quantized
                                        and v in AscendType._value2member_map_ else ckpt.info(n).shape)
                              for n, v in types.items() if n not in scales)),
        "ascend": {"model_quant_type": desc.get("model_quant_type"), "version": desc.get("version"),
                   "group_size": desc.get("group_size"), "weights_per_type": dict(sorted(counts.items())),
                   "mtp_layers": sorted(mtp),
                   "loaders": {k: {"accepts": not v, "reasons": sorted(set(v))[:8]} for k, v in refuse.items()}},
        "warnings": warnings,
    }
