"""The interface every on-disk layout implements, and the value types it trades in.

A layout is read through a `LayoutHandler` (detect, list the stored weights, read one, describe)
and written through the `Writer` its `writer()` returns for one conversion (which scheme each tensor
gets, the tensors / dtypes / shapes that hold it, their arrays, the config and side files). The
pipeline (plan, produce, verify, inspect, diff, nn.load) only ever talks to these two classes.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import numpy as np

from ...errors import LayoutError
from ...names import NamedEnum
from ...quant import BlockShape, Preset, QuantizedTensor, ScaleStorage, Scheme, dequantize, quantize
from ..folder import INDEX, SINGLE, Checkpoint
from ..safetensors_io import nbytes
from ..selection import quantizable

Output = tuple[str, str, tuple[int, ...]]  # (tensor name, safetensors dtype, shape) of one written tensor


class LayoutName(NamedEnum):
    """Every layout fp8port knows of; those without a module yet are a typed error where named."""

    __label__ = "layout"
    DENSE = "dense"
    DEEPSEEK = "deepseek"
    DEEPSEEK_V4 = "deepseek-v4"
    GPT_OSS = "gpt-oss"
    COMPRESSED_TENSORS = "compressed-tensors"
    MODELOPT = "modelopt"
    ASCEND = "ascend"
    FP8PORT = "fp8port"
    GGUF = "gguf"


class DenseDtype(NamedEnum):
    """What dequantized tensors are written as."""

    __label__ = "dtype"
    __aliases__ = {"bf16": ("bfloat16",), "fp16": ("float16", "f16"), "fp32": ("float32", "f32")}
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"

    @property
    def safetensors(self) -> str:
        return {DenseDtype.BF16: "BF16", DenseDtype.FP16: "F16", DenseDtype.FP32: "F32"}[self]

    @property
    def numpy(self) -> str:
        return {DenseDtype.BF16: "bfloat16", DenseDtype.FP16: "float16", DenseDtype.FP32: "float32"}[self]


class NonFinitePolicy(NamedEnum):
    """What a conversion does with NaN / Inf weights."""

    __label__ = "non-finite policy"
    ERROR = "error"
    KEEP = "keep"  # NaN/Inf blocks become NaN scales
    ZERO = "zero"  # non-finite weights are set to 0 first


@dataclass(frozen=True)
class StoredWeight:
    """One quantized weight as a checkpoint stores it.

    name: its logical name (what the model calls the parameter, e.g. "...down_proj.weight").
    shape: its element shape (unpacked; 2-D, or 3-D for stacked experts).
    scheme: what decodes it; per weight, so that one checkpoint may mix formats and blocks.
    parts: the source tensors it is made of, by role ("codes", "scale", "tensor_scale", "offset", ...),
        codes first; the pipeline skips them as tensors of their own.
    label: what inspect and diff call its storage (an AscendV1 type); "" means the element name.
    """

    name: str
    shape: tuple[int, ...]
    scheme: Scheme
    parts: dict[str, str]
    label: str = ""

    @property
    def tensors(self) -> tuple[str, ...]:
        return tuple(self.parts.values())

    @property
    def kind(self) -> str:
        return self.label or self.scheme.element.name


class Relayout(enum.Enum):
    """How a quantized source weight reaches a quantized target scheme."""

    PREFER = "prefer"  # keep the codes where exact (scales moved / replicated), else requantize
    REQUIRE = "require"  # keep the codes or fail (rescale --to mxfp8)
    NEVER = "never"  # always requantize from the dequantized values (rescale --to ue8m0)


class Action(enum.Enum):
    """What a conversion does with one source tensor."""

    COPY = "copy"  # bytes unchanged
    QUANTIZE = "quantize"  # a dense source into the target scheme
    DEQUANTIZE = "dequantize"  # a quantized source into a dense dtype (exact in float32)
    CAST = "cast"  # a dense source into another dense dtype (exact where every value fits)
    REQUANTIZE = "requantize"  # a quantized source's values into another scheme (lossy: SQNR reported)
    REPLICATE = "replicate-scales"  # codes kept, each scale copied onto the target blocks it covers (exact)
    WIDEN = "fp4-to-fp8"  # E2M1 codes widened to E4M3 by DeepSeek's rule (exact unless `lossless` says not)
    # codes and block scales kept, NVFP4's tensor scale inverted (divisor g <-> multiplier fp32(1/g)): exact
    # where 1/g is a power of two, else some block multipliers move by one float32 rounding (reported)
    RECIPROCAL = "reciprocal-tensor-scale"
    ENGINE = "engine"  # what an engine holds after loading the weight (rescale --to ENGINE; fp8port.engines)


@dataclass(frozen=True)
class Job:
    """One source tensor (or stored weight) and everything written from it."""

    action: Action
    source: str  # a tensor name, or a stored weight's logical name
    outputs: tuple[Output, ...]
    weight: StoredWeight | None = None  # the source's stored weight (quantized sources)
    scheme: Scheme | None = None  # the scheme written (quantize, requantize, replicate-scales)

    @property
    def nbytes(self) -> int:
        return sum(nbytes(d, s) for _, d, s in self.outputs)


@dataclass(frozen=True)
class WriteRequest:
    """What the user asked a conversion to write, parsed (names stay only where a layout owns them).

    preset: a preset name, or a layout's own type name (AscendV1); None keeps each source scheme.
    block / storage: --block and --scale-dtype, applied to every quantized weight's scheme.
    """

    preset: str | None = None
    block: BlockShape | None = None
    storage: ScaleStorage | None = None
    dense: DenseDtype | None = None  # dequantized outputs; None: the model's dtype
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    activation_scales: str | None = None  # a JSON file (AscendV1 W8A8 static)
    requantize_only: bool = False  # dense source tensors stay dense (rescale)
    type: str | None = None  # a layout's own tensor type name (GGUF: --type q8_0)


@dataclass(frozen=True)
class Source:
    """What a writer may know of the checkpoint it converts: names, headers, config, stored weights."""

    ckpt: Checkpoint
    layout: LayoutName
    weights: dict[str, StoredWeight]

    @property
    def model_dtype(self) -> str:
        """The safetensors dtype of the model's dense weights, from config.json (BF16 by default)."""
        cfg = self.ckpt.config or {}
        name = cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"
        return {"float16": "F16", "float32": "F32"}.get(str(name), "BF16")


# ---- reading ----------------------------------------------------------------------------------


class LayoutHandler:
    """One on-disk layout. Subclasses set `name`, `summary`, `loaders`, `quant_methods` and
    implement the reading methods; writable layouts also implement `writer`."""

    name: LayoutName
    summary: str = ""  # one line: what the files look like
    loaders: tuple[str, ...] = ()  # engines and tools that load this layout, for inspect
    quant_methods: tuple[str, ...] = ()  # config.json quantization_config.quant_method values it claims
    presets: tuple[str, ...] = ()  # presets written here when --layout is not given

    def detect(self, ckpt: Checkpoint) -> str | None:
        """Why `ckpt` is in this layout (files, config), or None. Tensor names alone: see `signature`."""
        method = ckpt.quantization_config.get("quant_method")
        if method in self.quant_methods:
            return f"config.json quantization_config.quant_method is {method!r}"
        return None

    def signature(self, ckpt: Checkpoint) -> str | None:
        """Why a folder WITHOUT quantization_config is in this layout, from tensor names alone
        (only where no other layout names tensors so), or None."""
        return None

    def weights(self, ckpt: Checkpoint) -> dict[str, StoredWeight]:
        """Every quantized weight by logical name, validated from headers (dtypes, shapes, scale grids)
        before any data is read; a typed CheckpointError names the file and tensor otherwise."""
        return {}

    def read(self, ckpt: Checkpoint, w: StoredWeight) -> QuantizedTensor:
        """One weight as a NumPy QuantizedTensor (scale values checked: finite, positive)."""
        raise LayoutError(f"{ckpt.root}: the {self.name.value} layout holds no quantized weights")

    def values(self, ckpt: Checkpoint, w: StoredWeight, dtype: str = "float32") -> np.ndarray:
        """One weight dequantized as the loaders compute it (NumPy, `dtype`)."""
        return np.asarray(dequantize(self.read(ckpt, w), dtype))

    def activation_scheme(self, ckpt: Checkpoint, w: StoredWeight) -> Scheme | None:
        """The activation scheme that goes with `w` for w8a8 runs (None: weight-only)."""
        return None

    def describe(self, ckpt: Checkpoint, weights: dict[str, StoredWeight]) -> dict:
        """What inspect says beyond the generic facts: `groups` (scheme per tensor group), `loaders`
        ({engine: note}), `warnings`, and any layout-specific keys."""
        return {"groups": scheme_groups(weights), "loaders": dict.fromkeys(self.loaders, "loads it"), "warnings": []}

    def writer(self, request: WriteRequest, source: Source) -> Writer:
        """The writer of one conversion into this layout (validates the request)."""
        raise LayoutError(f"fp8port reads the {self.name.value} layout but does not write it")

    def check_source(self, ckpt: Checkpoint) -> None:
        """Raise a typed error where a checkpoint in this layout cannot be converted from (it is still
        read by inspect, diff and --verify)."""

    def counterparts(self, ckpt: Checkpoint, names: list[str]) -> dict[str, str]:
        """For tensor names of another checkpoint, the tensor of this one that holds each (diff pairs
        them): the same name by default; layouts that rename tensors map them."""
        return {n: n for n in names if n in ckpt.tensors}


def in_order(ckpt: Checkpoint, weights: dict[str, StoredWeight]) -> list[tuple[str, StoredWeight | None]]:
    """A checkpoint's logical tensors in file order: (name, its stored weight) where its codes tensor
    stands, (name, None) for every other tensor that is not part of a stored weight."""
    first = {w.tensors[0]: w for w in weights.values()}
    parts = {t for w in weights.values() for t in w.tensors}
    return [
        (first[n].name, first[n]) if n in first else (n, None) for n in ckpt.tensors if n in first or n not in parts
    ]


def scheme_groups(weights: dict[str, StoredWeight]) -> list[dict]:
    """Weights grouped by (label, scheme): count and a few names, for inspect."""
    groups: dict[tuple, list[str]] = {}
    for w in weights.values():
        groups.setdefault((w.kind, w.scheme), []).append(w.name)
    return [
        {
            "kind": kind,
            "scheme": s.name,
            "element": s.element.name,
            "block": str(s.block),
            "scale_storage": s.storage.value,
            "scale_rule": s.scale_rule.value,
            "weights": len(names),
            "examples": names[:3],
        }
        for (kind, s), names in groups.items()
    ]


# ---- writing ----------------------------------------------------------------------------------


@dataclass
class Writer(ABC):
    """What one conversion writes in one layout. The default methods serve layouts with one code
    tensor and one scale grid per weight; a layout overrides what differs.

    preset: the preset the user named (None: each source weight keeps its scheme).
    """

    layout: LayoutName
    request: WriteRequest
    source: Source
    preset: Preset | None = None
    measures_error: bool = False  # report the SQNR of every quantized weight, not only requantized ones
    index_name: str = INDEX
    file_metadata: dict[str, str] | None = field(default_factory=lambda: {"format": "pt"})  # shards' __metadata__
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str | None:
        """What the summary calls the target (a preset name, an AscendV1 type)."""
        return self.preset.name if self.preset else None

    def __getstate__(self):
        # A writer travels to worker processes (pool, Ray) to encode and lay out arrays; what it read
        # of the source while planning (every header) stays in the planning process.
        return {**self.__dict__, "source": None}

    # -- decisions
    def scheme_for(self, name: str, dtype: str, shape: tuple[int, ...], stored: StoredWeight | None) -> Scheme | None:
        """The scheme tensor `name` is written in, or None to write it dense.

        Dense sources are quantized with the preset where `quantizable` (DeepSeek's keep list,
        --include / --exclude); quantized sources stay quantized (in the preset's scheme, else their
        own) unless --exclude names them. --block and --scale-dtype then apply; `hold` has the last word.
        """
        req = self.request
        target = self.preset_scheme(name, shape)
        if stored is None:
            if target is None or req.requantize_only or not quantizable(name, dtype, shape, req.include, req.exclude):
                return None
            scheme = target
        else:
            if any(fnmatchcase(name, p) for p in req.exclude):
                return None
            scheme = target or stored.scheme
        if req.block is not None and self.reblocks(scheme):
            scheme = scheme.with_(block=req.block)
        if req.storage is not None:
            scheme = scheme.with_(storage=req.storage)
        scheme.block.extents(shape)  # a block that does not fit the rank fails here, before any data
        return self.hold(name, shape, scheme)

    def preset_scheme(self, name: str, shape: tuple[int, ...]) -> Scheme | None:
        """The scheme the requested preset gives tensor `name` (None: no preset). Layouts that mix
        schemes by tensor (DeepSeek-V4's FP4 experts) override it."""
        return self.preset.weight if self.preset else None

    def reblocks(self, scheme: Scheme) -> bool:
        """Whether --block applies to a weight in `scheme` (every one, unless a layout says otherwise)."""
        return True

    def hold(self, name: str, shape: tuple[int, ...], scheme: Scheme) -> Scheme:
        """`scheme` as this layout stores it (e.g. another scale storage holding the same values), or
        a typed error saying why it cannot (the pipeline adds which layouts can)."""
        return scheme

    def dense_dtype(self, name: str, source_dtype: str) -> str:
        """The safetensors dtype of a dequantized weight."""
        return self.request.dense.safetensors if self.request.dense else self.source.model_dtype

    def dense_output(self, name: str, dtype: str, shape: tuple[int, ...], stored: StoredWeight | None) -> Output:
        """What a tensor written dense becomes: a dense source is copied as it is, a quantized one
        dequantized into `dense_dtype`. A layout that renames or retypes dense tensors overrides this
        (a dense source in another dtype is then a cast)."""
        return name, self.dense_dtype(name, dtype) if stored else dtype, tuple(shape)

    # -- tensors
    @abstractmethod
    def outputs(self, name: str, shape: tuple[int, ...], scheme: Scheme) -> list[Output]:
        """Everything written for weight `name` of logical `shape` in `scheme`."""

    def encode(self, name: str, x: np.ndarray, scheme: Scheme, nonfinite: NonFinitePolicy) -> QuantizedTensor:
        """A dense source weight quantized for this layout (NonFiniteError per the policy)."""
        return quantize(
            x, scheme, role="weight", nonfinite="propagate" if nonfinite is NonFinitePolicy.KEEP else "error"
        )

    @abstractmethod
    def arrays(self, name: str, q: QuantizedTensor) -> list[np.ndarray]:
        """The arrays of `outputs(name, q.shape, q.scheme)`, in order."""

    def report(self, name: str, q: QuantizedTensor) -> dict:
        """Extra per-tensor facts for the summary."""
        return {}

    # -- files
    def arrange(self, jobs: list[Job]) -> list[Job]:
        """Every planned job, in the order this layout writes them (and copies in the dtype it writes)."""
        return jobs

    def review(self, jobs: list[Job]) -> None:
        """Called once with every planned job: checks that span tensors (raise), notes (self.notes)."""
        return None  # noqa: B027  (optional hook: most layouts have nothing to check across tensors)

    @abstractmethod
    def config(self, config: dict | None, jobs: list[Job]) -> dict | str | None:
        """config.json to write: the source's with this layout's quantization_config (or none), or its text."""

    def schemes(self, jobs: list[Job]) -> list[Scheme]:
        """The distinct schemes written, in order (the preset's when nothing is quantized)."""
        out = list(dict.fromkeys(j.scheme for j in jobs if j.scheme is not None))
        if not out and self.preset is not None:
            s = self.preset.weight
            s = s.with_(block=self.request.block) if self.request.block else s
            out = [s.with_(storage=self.request.storage) if self.request.storage else s]
        return out

    def side_files(self, plan) -> dict[str, object]:
        """JSON files written beside the shards when the output is complete: {file name: object, or its text}."""
        return {}

    def index(self, plan) -> object | None:
        """The index file's content (`index_name`): an object, its text, or None (one shard needs none)."""
        return index_object(plan) if len(plan.shard_names) > 1 else None

    def shard_names(self, n: int) -> list[str]:
        return [SINGLE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]

    def extra_copies(self) -> list[tuple[str, str]]:
        """Source tensors written once more under another name: [(source, output name)]."""
        return []

    # A layout whose output is one file, not a folder of shards (GGUF), sets single_file and
    # implements write_single; convert stages the file beside DST and renames it when complete.
    single_file = False

    def write_single(self, path, plan, arrays) -> None:
        """Write the whole output to `path`: `arrays` yields each job's arrays in plan order."""
        raise NotImplementedError


def with_config(config: dict | None, qc: dict | None) -> dict | None:
    """A copy of a config.json with quantization_config replaced (None: removed, also from text_config)."""
    if config is None:
        return None
    out = {k: v for k, v in config.items() if k != "quantization_config"}
    if qc is None:
        if isinstance(out.get("text_config"), dict):
            out["text_config"] = {k: v for k, v in out["text_config"].items() if k != "quantization_config"}
    else:
        out["quantization_config"] = qc
    return out


def index_object(plan) -> dict:
    """{"metadata": {"total_size": bytes}, "weight_map": {tensor: shard}} in the plan's order."""
    weight_map = {
        n: plan.shard_names[si] for si, idx in enumerate(plan.shards) for ji in idx for n, _, _ in plan.jobs[ji].outputs
    }
    return {"metadata": {"total_size": sum(j.nbytes for j in plan.jobs)}, "weight_map": weight_map}


def ignored_modules(jobs: list[Job]) -> list[str]:
    """Linear modules left unquantized (2-D weights written dense, embeddings aside), and lm_head,
    which a tied model has no tensor for but is a Linear all the same: compressed-tensors' `ignore`."""
    out = [
        j.source[: -len(".weight")]
        for j in jobs
        if j.scheme is None and j.source.endswith(".weight") and len(j.outputs[0][2]) == 2 and "embed" not in j.source
    ]
    return out if "lm_head" in out else out + ["lm_head"]
