"""Planning a conversion: every output tensor's name, dtype and shape, and its shard, known
before any data is read; and the fingerprint that `--resume` checks."""

from __future__ import annotations

import enum
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import CheckpointError, ConversionError, UnknownNameError
from .folder import SINGLE, Checkpoint
from .layouts import Layout, Target, check_grids, detect, logical_shape, quantized_weights, reader_scheme
from .safetensors_io import nbytes
from .selection import quantizable

SUMMARY = "fp8port-summary.json"
DENSE = {"bf16": ("BF16", "bfloat16"), "fp16": ("F16", "float16"), "fp32": ("F32", "float32")}


class Action(enum.Enum):
    COPY = "copy"
    QUANTIZE = "quantize"
    DEQUANTIZE = "dequantize"
    REQUANTIZE = "requantize"  # fp32 block scales -> UE8M0 (what vLLM/SGLang do at load time)
    REPLICATE = "replicate-scales"  # UE8M0 128x128 -> MXFP8 1x32: codes kept, scale bytes copied


class NonFinitePolicy(enum.Enum):
    ERROR = "error"
    KEEP = "keep"  # NaN/Inf blocks become NaN scales
    ZERO = "zero"  # non-finite weights are set to 0 first

    @classmethod
    def parse(cls, v):
        if isinstance(v, cls):
            return v
        try:
            return cls(str(v).lower())
        except ValueError:
            raise UnknownNameError("non-finite policy", v, [m.value for m in cls]) from None


@dataclass(frozen=True)
class Job:
    action: Action
    source: str
    scale: str | None
    outputs: tuple[tuple[str, str, tuple[int, ...]], ...]  # (name, safetensors dtype, shape)

    @property
    def nbytes(self) -> int:
        return sum(nbytes(d, s) for _, d, s in self.outputs)


@dataclass(frozen=True)
class Options:
    """Everything that decides the output bytes (part of the resume fingerprint)."""

    mode: str  # convert | dequant | rescale
    preset: str | None = None
    layout: str | None = None
    scale_dtype: str | None = None
    dtype: str = "bf16"  # dequant output
    to: str | None = None  # rescale target
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    shard_size: int = 5 * 1024**3
    nonfinite: str = "error"
    activation_scales: str | None = None  # JSON of calibrated input scales (AscendV1 W8A8 static)


@dataclass
class Plan:
    src: Path
    options: Options
    jobs: list[Job]
    shards: list[list[int]]  # job indices per shard
    shard_names: list[str]
    config: dict | None
    target: Target | None = None
    read_layout: Layout = Layout.DENSE
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "mode": self.options.mode, "options": asdict(self.options),
            "layout_in": self.read_layout.value,
            "layout_out": self.target.layout.value if self.target else "dense",
            "shards": {n: [self.jobs[i].source for i in idx] for n, idx in zip(self.shard_names, self.shards)},
            "tensors": [{"source": j.source, "action": j.action.value,
                         "outputs": [{"name": n, "dtype": d, "shape": list(s)} for n, d, s in j.outputs]}
                        for j in self.jobs],
            "notes": self.notes,
        }



def _shard(jobs: list[Job], shard_size: int) -> tuple[list[list[int]], list[str]]:
    shards, cur, size = [], [], 0
    for i, j in enumerate(jobs):
        if cur and size + j.nbytes > shard_size:
            shards.append(cur)
            cur, size = [], 0
        cur.append(i)
        size += j.nbytes
    if cur or not shards:
        shards.append(cur)
    n = len(shards)
    names = [SINGLE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    return shards, names


def _check_packable(name, shape, target):
    el = target.scheme.element
    if el.bits < 8 and math.prod(shape) * el.bits % 8:
        raise CheckpointError(f"tensor {name!r} {list(shape)}: {math.prod(shape)} {el.name} codes do not "
                              "fill whole bytes; exclude it (--exclude) or choose an 8-bit preset")


def plan_convert(ckpt: Checkpoint, opts: Options) -> Plan:
    if opts.layout and Layout.parse(opts.layout) is Layout.ASCEND:  # reads dense and FP8 sources
        from . import ascend

        return ascend.plan_convert(ckpt, opts)
    if detect(ckpt) is not Layout.DENSE:
        raise ConversionError(f"{ckpt.root} is already quantized ({detect(ckpt).value} layout); "
                              "use `fp8port dequant` or `fp8port rescale`")
    target = Target.choose(opts.preset, opts.layout, opts.scale_dtype)
    jobs, ignored = [], []
    for name, (_, info) in ckpt.tensors.items():
        if quantizable(name, info.dtype, info.shape, opts.include, opts.exclude):
            _check_packable(name, info.shape, target)
            target.scheme.block.extents(info.shape)
            jobs.append(Job(Action.QUANTIZE, name, None, tuple(target.entries(name, info.shape))))
        else:
            if name.endswith(".weight") and len(info.shape) == 2 and "embed" not in name:
                ignored.append(name[: -len(".weight")])
            jobs.append(Job(Action.COPY, name, None, ((name, info.dtype, info.shape),)))
    if "lm_head" not in ignored:  # a tied lm_head has no tensor but is a Linear all the same
        ignored.append("lm_head")
    config = dict(ckpt.config or {})
    config["quantization_config"] = target.quantization_config(ignored)
    shards, names = _shard(jobs, opts.shard_size)
    plan = Plan(ckpt.root, opts, jobs, shards, names, config, target, Layout.DENSE)
    if not any(j.action is Action.QUANTIZE for j in jobs):
        plan.notes.append("no tensor matched the quantization rules: the output is a copy")
    return plan


def plan_dequant(ckpt: Checkpoint, opts: Options) -> Plan:
    layout = detect(ckpt)
    if layout is Layout.DENSE:
        raise ConversionError(f"{ckpt.root} holds no quantized weights; nothing to dequantize")
    if opts.dtype not in DENSE:
        raise UnknownNameError("dtype", opts.dtype, DENSE)
    if layout is Layout.ASCEND:
        from . import ascend

        return ascend.plan_dequant(ckpt, opts)
    scheme = reader_scheme(ckpt, layout)  # the config first: its errors explain the rest
    pairs = quantized_weights(ckpt, layout)
    scales = set(pairs.values()) | {n for n in ckpt.tensors if n.endswith(".weight_tensor_scale")}
    out_dtype = DENSE[opts.dtype][0]
    check_grids(ckpt, pairs, scheme)
    jobs = []
    for name, (_, info) in ckpt.tensors.items():
        if name in pairs:
            jobs.append(Job(Action.DEQUANTIZE, name, pairs[name], ((name, out_dtype, logical_shape(info, scheme)),)))
        elif name not in scales:
            jobs.append(Job(Action.COPY, name, None, ((name, info.dtype, info.shape),)))
    config = dict(ckpt.config or {})
    config.pop("quantization_config", None)
    shards, names = _shard(jobs, opts.shard_size)
    return Plan(ckpt.root, opts, jobs, shards, names, config, None, layout)


def plan_rescale(ckpt: Checkpoint, opts: Options) -> Plan:
    layout = detect(ckpt)
    if layout not in (Layout.DEEPSEEK, Layout.COMPRESSED_TENSORS):
        raise ConversionError(f"rescale reads FP8 block checkpoints (deepseek or compressed-tensors layout); "
                              f"{ckpt.root} is {layout.value}")
    to = (opts.to or "").lower()
    if to == "ue8m0":
        target, action = Target.choose("deepseek-v3.1", "deepseek", opts.scale_dtype), Action.REQUANTIZE
    elif to == "mxfp8":
        target, action = Target.choose("mxfp8"), Action.REPLICATE
    else:
        raise UnknownNameError("rescale target", opts.to, ["ue8m0", "mxfp8"])
    src_scheme = reader_scheme(ckpt, layout)
    pairs = quantized_weights(ckpt, layout)
    check_grids(ckpt, pairs, src_scheme)
    if action is Action.REPLICATE and src_scheme.block.size[1] % target.scheme.block.size[0]:
        raise ConversionError(f"{src_scheme.block} blocks do not split into 1x{target.scheme.block.size[0]} blocks")
    jobs = []
    for name, (_, info) in ckpt.tensors.items():
        if name in pairs:
            jobs.append(Job(action, name, pairs[name], tuple(target.entries(name, info.shape))))
        elif name not in set(pairs.values()):
            jobs.append(Job(Action.COPY, name, None, ((name, info.dtype, info.shape),)))
    config = dict(ckpt.config or {})
    qc = target.quantization_config(list(ckpt.quantization_config.get("ignore", [])))
    if action is Action.REPLICATE:
        qc["derived_from"] = f"{layout.value} {src_scheme.block} power-of-two scales, replicated per 1x32 block"
    config["quantization_config"] = qc
    shards, names = _shard(jobs, opts.shard_size)
    return Plan(ckpt.root, opts, jobs, shards, names, config, target, layout)


PLANNERS = {"convert": plan_convert, "dequant": plan_dequant, "rescale": plan_rescale}


def make_plan(src, opts: Options) -> Plan:
    return PLANNERS[opts.mode](Checkpoint.open(src), opts)


def fingerprint(plan: Plan, ckpt: Checkpoint) -> str:
    src = [(n, ckpt.tensors[n][0].name, i.dtype, list(i.shape), i.begin, i.end)
           for n, (_, i) in ckpt.tensors.items()]
    files = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in ckpt.files]
    blob = json.dumps({"v": __version__, "plan": plan.to_json(), "src": src, "files": files}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()
