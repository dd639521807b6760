"""Planning a conversion: every output tensor's name, dtype and shape, and its shard, known
before any data is read; and the fingerprint that `--resume` checks.

The plan asks the source's layout handler what is stored and the target layout's writer what to
write; it holds no layout-specific branch (checkpoint/layouts/ does).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from .. import __version__, engines
from ..errors import ConversionError, Fp8portError, LayoutError, UnknownNameError
from ..names import NamedEnum
from ..quant import BlockShape, ScaleStorage
from ..quant.relayout import blocker, rounding, widen_blocker
from . import layouts
from .folder import Checkpoint
from .layouts import Action, DenseDtype, Job, LayoutName, NonFinitePolicy, Relayout, Source, Writer, WriteRequest

SUMMARY = "fp8port-summary.json"


class Operation(NamedEnum):
    __label__ = "operation"
    CONVERT = "convert"
    DEQUANT = "dequant"
    RESCALE = "rescale"


class RescaleTarget(NamedEnum):
    __label__ = "rescale target"
    UE8M0 = "ue8m0"  # fp32 block scales -> UE8M0, DeepGEMM's bitwise rule, every weight (engines: --to ENGINE)
    MXFP8 = "mxfp8"  # UE8M0 128x128 -> MXFP8 1x32: codes kept, scale bytes copied


def rescale_target(value) -> RescaleTarget | engines.EngineName:
    """--to: a scale format (ue8m0, mxfp8), or an engine whose load-time transform is applied."""
    for parse in (RescaleTarget.parse, engines.EngineName.parse):
        try:
            return parse(value)
        except UnknownNameError:
            pass
    raise UnknownNameError("rescale target", value, [t.value for t in RescaleTarget] + list(engines.ENGINES))


_PARSE = {
    "mode": Operation.parse,
    "layout": LayoutName.parse,
    "scale_dtype": ScaleStorage.parse,
    "block": BlockShape.parse,
    "dtype": DenseDtype.parse,
    "to": rescale_target,
    "nonfinite": NonFinitePolicy.parse,
}


@dataclass(frozen=True)
class Options:
    """Everything that decides the output bytes (part of the resume fingerprint). Names are parsed
    into typed values here, once; `preset` stays a name (its meaning is the target layout's)."""

    mode: Operation
    preset: str | None = None
    layout: LayoutName | None = None
    scale_dtype: ScaleStorage | None = None
    block: BlockShape | None = None  # --block MxN: re-block every quantized weight
    dtype: DenseDtype = DenseDtype.BF16  # dequant output
    to: RescaleTarget | engines.EngineName | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    shard_size: int = 5 * 1024**3
    nonfinite: NonFinitePolicy = NonFinitePolicy.ERROR
    activation_scales: str | None = None  # JSON of calibrated input scales (AscendV1 W8A8 static)
    type: str | None = None  # the target layout's own tensor type (GGUF --type); parsed by that layout
    exact: bool = False  # refuse every step that could change a value (quantize, requantize, a lossy cast)

    def __post_init__(self):
        for name, parse in _PARSE.items():
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, parse(v))
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))

    def to_json(self) -> dict:
        def plain(v):
            return v.value if hasattr(v, "value") else (str(v) if isinstance(v, BlockShape) else v)

        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else plain(v)) for f in fields(self)}


@dataclass
class Plan:
    src: Path
    options: Options
    jobs: list[Job]
    shards: list[list[int]]  # job indices per shard
    shard_names: list[str]
    config: dict | str | None  # config.json to write (its text where the layout formats it)
    writer: Writer
    read_layout: LayoutName = LayoutName.DENSE
    notes: list[str] = field(default_factory=list)

    @property
    def layout_out(self) -> LayoutName:
        return self.writer.layout

    def to_json(self) -> dict:
        return {
            "mode": self.options.mode.value,
            "options": self.options.to_json(),
            "layout_in": self.read_layout.value,
            "layout_out": self.layout_out.value,
            "shards": {n: [self.jobs[i].source for i in idx] for n, idx in zip(self.shard_names, self.shards)},
            "tensors": [
                {
                    "source": j.source,
                    "action": j.action.value,
                    "scheme": j.scheme.describe() if j.scheme else None,
                    "outputs": [{"name": n, "dtype": d, "shape": list(s)} for n, d, s in j.outputs],
                }
                for j in self.jobs
            ],
            "notes": self.notes,
        }


def shard(jobs: list[Job], shard_size: int) -> list[list[int]]:
    """Job indices per shard, in order, each shard at most shard_size bytes (or one job)."""
    shards, cur, size = [], [], 0
    for i, j in enumerate(jobs):
        if cur and size + j.nbytes > shard_size:
            shards.append(cur)
            cur, size = [], 0
        cur.append(i)
        size += j.nbytes
    if cur or not shards:
        shards.append(cur)
    return shards


def _holders(source: Source, name: str, shape, scheme) -> list[str]:
    """The writable layouts whose writer holds `scheme` for this tensor (for error messages)."""
    out = []
    for n in layouts.writable():
        try:
            layouts.get(n).writer(WriteRequest(), source).hold(name, shape, scheme)
            out.append(n.value)
        except Fp8portError:
            pass
    return out


def _job(writer: Writer, name: str, info, stored, relayout: Relayout) -> Job:
    shape = stored.shape if stored else tuple(info.shape)
    try:
        scheme = writer.scheme_for(name, info.dtype, shape, stored)
    except LayoutError as e:
        holders = _holders(writer.source, name, shape, e.scheme) if getattr(e, "scheme", None) is not None else []
        also = f"; layouts that hold it: {', '.join(holders)}" if holders else ""
        raise LayoutError(f"{name}: {e}{also}") from None
    if scheme is None:
        out = writer.dense_output(name, info.dtype, shape, stored)
        if stored is not None:
            return Job(Action.DEQUANTIZE, name, (out,), stored)
        return Job(Action.COPY if out[1] == info.dtype else Action.CAST, name, (out,))
    outputs = tuple(writer.outputs(name, shape, scheme))
    if stored is None:
        return Job(Action.QUANTIZE, name, outputs, None, scheme)
    why = blocker(stored.scheme, scheme, shape) if relayout is not Relayout.NEVER else "requantize asked"
    if why is None:
        return Job(
            Action.RECIPROCAL if rounding(stored.scheme, scheme) else Action.REPLICATE, name, outputs, stored, scheme
        )
    if relayout is Relayout.PREFER and widen_blocker(stored.scheme, scheme, shape) is None:
        return Job(Action.WIDEN, name, outputs, stored, scheme)
    if relayout is Relayout.REQUIRE:
        raise ConversionError(f"{name}: a re-layout into {scheme.name} would not be exact: {why}")
    return Job(Action.REQUANTIZE, name, outputs, stored, scheme)


def _refuse_lossy(jobs: list[Job]) -> None:
    """--exact: a step that changes values by design is refused before anything is written (casts and
    dequantizations are checked value by value while writing)."""
    for j in jobs:
        if j.action is Action.QUANTIZE:
            raise ConversionError(
                f"--exact: {j.source}: quantizing a dense tensor into {j.scheme.name} changes its "
                "values; drop --exact, or exclude it (--exclude)"
            )
        if j.action is Action.REQUANTIZE:
            why = blocker(j.weight.scheme, j.scheme, j.weight.shape) or "the scales do not carry over"
            raise ConversionError(
                f"--exact: {j.source}: {j.weight.scheme.name} cannot be held exactly as "
                f"{j.scheme.name} ({why}); drop --exact, or choose a type that holds it"
            )


def read_source(ckpt: Checkpoint) -> Source:
    """The checkpoint's layout and stored weights, validated from the headers (errors name file and tensor)."""
    handler, _ = layouts.detect(ckpt)
    handler.check_source(ckpt)
    return Source(ckpt, handler.name, handler.weights(ckpt))


def plan(
    source: Source,
    opts: Options,
    target: LayoutName,
    request: WriteRequest | None = None,
    relayout: Relayout = Relayout.PREFER,
) -> Plan:
    """Every tensor of the source through the target layout's writer: copy, quantize, dequantize,
    re-lay out (codes kept) or requantize, in source order."""
    ckpt = source.ckpt
    request = request or WriteRequest(
        opts.preset,
        opts.block,
        opts.scale_dtype,
        None,
        opts.include,
        opts.exclude,
        opts.activation_scales,
        type=opts.type,
    )
    writer = layouts.get(target).writer(request, source)
    jobs = [
        _job(writer, name, ckpt.info(w.tensors[0] if w else name), w, relayout)
        for name, w in layouts.in_order(ckpt, source.weights)
    ]
    jobs += [
        Job(Action.COPY, src, ((out, ckpt.info(src).dtype, ckpt.info(src).shape),))
        for src, out in writer.extra_copies()
    ]
    jobs = writer.arrange(jobs)
    writer.review(jobs)
    if opts.exact:
        _refuse_lossy(jobs)
    config = writer.config(ckpt.config, jobs)
    shards = [list(range(len(jobs)))] if writer.single_file else shard(jobs, opts.shard_size)
    p = Plan(
        ckpt.root,
        opts,
        jobs,
        shards,
        writer.shard_names(len(shards)),
        config,
        writer,
        source.layout,
        list(writer.notes),
    )
    if request.preset and not any(j.scheme is not None for j in jobs):
        p.notes.append("no tensor matched the quantization rules: the output is a copy")
    return p


def plan_convert(ckpt: Checkpoint, opts: Options) -> Plan:
    source = read_source(ckpt)
    if opts.preset is None and opts.type is None and not source.weights:
        raise ConversionError(
            f"{ckpt.root} holds no quantized weights: convert needs --preset to quantize it (or --layout gguf --type T)"
        )
    if opts.preset is None and opts.layout is None and opts.block is None and opts.scale_dtype is None:
        raise ConversionError(
            f"{ckpt.root} is already in the {source.layout.value} layout: name --preset, --layout, "
            "--block or --scale-dtype (or `fp8port dequant` it)"
        )
    target = opts.layout or (layouts.default_layout(opts.preset) if opts.preset else source.layout)
    return plan(source, opts, target)


def plan_dequant(ckpt: Checkpoint, opts: Options) -> Plan:
    source = read_source(ckpt)
    if not source.weights:
        raise ConversionError(f"{ckpt.root} holds no quantized weights; nothing to dequantize")
    return plan(source, opts, LayoutName.DENSE, WriteRequest(dense=opts.dtype))


def plan_rescale(ckpt: Checkpoint, opts: Options) -> Plan:
    if opts.to is None:
        raise ConversionError("rescale needs --to ue8m0, --to mxfp8 or --to ENGINE")
    source = read_source(ckpt)
    if not source.weights:
        raise ConversionError(
            f"rescale reads quantized checkpoints (FP8 blocks); {ckpt.root} holds no quantized weights"
        )
    if isinstance(opts.to, engines.EngineName):
        return plan_engine(source, opts, engines.get(opts.to))
    if opts.to is RescaleTarget.UE8M0:
        req = WriteRequest("deepseek-v3.1", storage=opts.scale_dtype, exclude=opts.exclude, requantize_only=True)
        return plan(source, opts, LayoutName.DEEPSEEK, req, Relayout.NEVER)
    req = WriteRequest("mxfp8", exclude=opts.exclude, requantize_only=True)
    return plan(source, opts, LayoutName.FP8PORT, req, Relayout.REQUIRE)


def _holds(layout: LayoutName, request: WriteRequest, source: Source, schemes: dict) -> bool:
    """Whether `layout`'s writer holds every {weight: scheme}."""
    try:
        writer = layouts.get(layout).writer(request, source)
        for n, scheme in schemes.items():
            writer.hold(n, source.weights[n].shape, scheme)
    except Fp8portError:
        return False
    return True


def plan_engine(source: Source, opts: Options, engine: engines.Engine) -> Plan:
    """The checkpoint as `engine` holds it after loading: kept weights re-laid out as they are (exact),
    the others requantized or dequantized by the engine's transform. Written in the source's layout where
    its writer holds every resulting scheme, else in fp8port's; dense when nothing stays quantized."""
    ckpt = source.ckpt
    ctx = engines.Context.from_config(ckpt.config)
    steps = {n: engine.plan(w, ctx) for n, w in source.weights.items()}
    failed = [(n, s.why) for n, s in steps.items() if s.action is engines.Action.FAIL]
    if failed:
        raise ConversionError(
            f"{engine.name} does not load {ckpt.root}: {failed[0][0]}: {failed[0][1]}"
            + (f" (and {len(failed) - 1} more weights)" if len(failed) > 1 else "")
        )
    held = {
        n: s.scheme if s.scheme is not None else source.weights[n].scheme
        for n, s in steps.items()
        if s.action is not engines.Action.DEQUANTIZE
    }
    request = WriteRequest(requantize_only=True)
    target = (
        LayoutName.DENSE
        if not held
        else source.layout
        if _holds(source.layout, request, source, held)
        else LayoutName.FP8PORT
    )
    writer = layouts.get(target).writer(request, source)
    jobs = []
    for name, w in layouts.in_order(ckpt, source.weights):
        if w is None:
            info = ckpt.info(name)
            jobs.append(Job(Action.COPY, name, ((name, info.dtype, tuple(info.shape)),)))
        elif steps[name].action is engines.Action.DEQUANTIZE:
            dtype = DenseDtype.parse(steps[name].dtype.value).safetensors
            jobs.append(Job(Action.ENGINE, name, ((name, dtype, w.shape),), w))
        else:
            scheme = writer.hold(name, w.shape, held[name])
            action = Action.REPLICATE if steps[name].action is engines.Action.KEEP else Action.ENGINE
            jobs.append(Job(action, name, tuple(writer.outputs(name, w.shape, scheme)), w, scheme))
    writer.review(jobs)
    shards = shard(jobs, opts.shard_size)
    return Plan(
        ckpt.root,
        opts,
        jobs,
        shards,
        writer.shard_names(len(shards)),
        writer.config(ckpt.config, jobs),
        writer,
        source.layout,
        list(writer.notes) + [f"{engine.name}: {engine.summary}"],
    )


PLANNERS = {Operation.CONVERT: plan_convert, Operation.DEQUANT: plan_dequant, Operation.RESCALE: plan_rescale}


def make_plan(src, opts: Options) -> Plan:
    return PLANNERS[opts.mode](Checkpoint.open(src), opts)


def fingerprint(plan: Plan, ckpt: Checkpoint) -> str:
    src = [(n, ckpt.tensors[n][0].name, i.dtype, list(i.shape), i.begin, i.end) for n, (_, i) in ckpt.tensors.items()]
    files = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in ckpt.files]
    blob = json.dumps({"v": __version__, "plan": plan.to_json(), "src": src, "files": files}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()
