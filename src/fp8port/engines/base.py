"""What an engine does to a block-scaled weight when it loads it: the plan (headers only) and the result.

An engine reads a checkpoint and, before its first matmul, may keep the codes and scales as stored,
requantize them (vLLM on Blackwell: UE8M0 block scales), resolve them to a dense dtype (vLLM-Ascend on
A2 / A3) or refuse. `Engine.plan` decides that per weight from its name, shape and scheme alone, so that
`inspect` can say it without reading data; `Engine.apply` computes what the engine then holds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Protocol

import ml_dtypes
import numpy as np

from ..errors import UnknownNameError
from ..names import NamedEnum
from ..quant import QuantizedTensor, ScaleStorage, Scheme, dequantize
from ..quant.scheme import BlockKind


class WeightInfo(Protocol):
    """What a plan may look at: a stored weight's logical name, element shape and scheme."""

    name: str
    shape: tuple[int, ...]
    scheme: Scheme


class Dense(NamedEnum):
    """A dense dtype an engine holds weights in (the model's dtype, as its loader resolves it)."""

    __label__ = "dense dtype"
    __aliases__ = {"bfloat16": ("bf16",), "float16": ("fp16", "f16", "half"), "float32": ("fp32", "f32", "float")}
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    FLOAT32 = "float32"

    @property
    def numpy(self):
        return {Dense.BFLOAT16: ml_dtypes.bfloat16, Dense.FLOAT16: np.float16, Dense.FLOAT32: np.float32}[self]


@dataclass(frozen=True)
class Context:
    """What engines read from config.json besides the weights: the model's dtype, its model_type
    (vLLM and vLLM-Ascend switch paths on it) and quant_method (which loader transformers picks)."""

    dtype: Dense = Dense.BFLOAT16
    model_type: str | None = None
    quant_method: str | None = None

    @classmethod
    def from_config(cls, config: dict | None) -> Context:
        cfg = config or {}
        text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else {}
        name = cfg.get("torch_dtype") or cfg.get("dtype") or text.get("torch_dtype") or text.get("dtype")
        try:
            dtype = Dense.parse(name) if name else Dense.BFLOAT16
        except UnknownNameError:  # an odd dtype string in a config: the engines load it as bf16
            dtype = Dense.BFLOAT16
        qc = cfg.get("quantization_config") if isinstance(cfg.get("quantization_config"), dict) else {}
        method = qc.get("quant_method")
        return cls(dtype, text.get("model_type") or cfg.get("model_type"), method if isinstance(method, str) else None)


class Action(enum.Enum):
    KEEP = "keep"  # the engine runs the stored codes and scales
    REQUANTIZE = "requantize"  # new codes and scales (Step.scheme)
    DEQUANTIZE = "dequantize"  # dense weights in Step.dtype
    FAIL = "fail"  # the engine refuses the checkpoint, or fp8port does not model this path


@dataclass(frozen=True)
class Step:
    """One weight's fate in one engine: the action, one line saying what and why, and the target."""

    action: Action
    why: str
    scheme: Scheme | None = None  # REQUANTIZE: the new scheme
    dtype: Dense | None = None  # DEQUANTIZE: the dense dtype held
    reads_as: Scheme | None = None  # DEQUANTIZE: the scheme the loader decodes the stored codes with, where wrong

    @property
    def changes(self) -> bool:
        return self.action in (Action.REQUANTIZE, Action.DEQUANTIZE)


@dataclass(frozen=True)
class Held:
    """A weight as an engine holds it after loading.

    values: float32 array of what its matmul multiplies by (exact: every held value is a float32).
    nbytes: what holding it takes (codes and scales, or the dense dtype).
    q: the codes and scales it holds, where it holds codes (KEEP, REQUANTIZE); None for dense weights.
    quantized_from: what it quantized, where it requantized (clipping is measured against it).
    """

    values: np.ndarray
    nbytes: int
    q: QuantizedTensor | None = None
    quantized_from: np.ndarray | None = None


def keep(why: str) -> Step:
    return Step(Action.KEEP, why)


def fail(why: str) -> Step:
    return Step(Action.FAIL, why)


def is_fp8_block(scheme: Scheme) -> bool:
    """E4M3 codes with one scale per 2-D tile (DeepSeek / compressed-tensors block FP8)."""
    return scheme.element.name == "float8_e4m3fn" and scheme.block.kind is BlockKind.TILE


def is_mxfp8(scheme: Scheme) -> bool:
    """E4M3 codes with one E8M0 scale per 1x32 along the last axis (OCP MXFP8, AscendV1 W8A8_MXFP8)."""
    b = scheme.block
    return (
        scheme.element.name == "float8_e4m3fn"
        and b.kind is BlockKind.VECTOR
        and b.size == (32,)
        and b.axis == -1
        and scheme.storage is ScaleStorage.E8M0
    )


def dims(w: WeightInfo) -> tuple[int, int]:
    """(N, K): output rows and the reduction dimension of a linear weight (experts: per expert)."""
    return int(w.shape[-2]), int(w.shape[-1])


def fp32_values(q: QuantizedTensor) -> np.ndarray:
    """code x scale as one float32 multiplication per element, as `w.to(float32) * s_expanded` in torch."""
    return np.asarray(dequantize(q, "float32"), np.float32)


def resolve(q: QuantizedTensor, dtype: Dense) -> np.ndarray:
    """The float32 product rounded (RNE) to `dtype`: what `(w.float() * s).to(dtype)` holds."""
    return fp32_values(q).astype(dtype.numpy)


def held_dense(values: np.ndarray, nbytes: int | None = None) -> Held:
    """Dense weights held in values' dtype (nbytes: where the engine stores them otherwise)."""
    values = np.asarray(values)
    return Held(values.astype(np.float32), values.nbytes if nbytes is None else int(nbytes))


def held_quantized(q: QuantizedTensor, quantized_from: np.ndarray | None = None) -> Held:
    codes = np.asarray(q.codes).size * q.scheme.element.bits // 8
    scales = np.asarray(q.scale_fp32).size * q.scheme.storage.nbytes
    return Held(fp32_values(q), codes + scales, q, quantized_from)


def _method(m: str | None) -> str:
    return "no quantization_config" if m is None else repr(m)


class Engine:
    """One engine's load-time transform. Subclasses set the class attributes and implement `decide`
    (headers only) and `requantize` (for the REQUANTIZE steps they plan)."""

    name: str  # an EngineName value
    summary: str  # one line: what loading does to a block-FP8 checkpoint
    source: str  # where the behaviour is transcribed from: repository, file, function, version / commit
    reads: tuple[str | None, ...] = ()  # the quant_method values whose load path is modelled

    def plan(self, w: WeightInfo, ctx: Context) -> Step:
        """What loading does to weight `w`, from its name, shape and scheme alone."""
        if ctx.quant_method not in self.reads:
            return fail(
                f"loading quant_method {_method(ctx.quant_method)} is not modelled (modelled: "
                + ", ".join(_method(m) for m in self.reads)
                + ")"
            )
        return self.decide(w, ctx)

    def decide(self, w: WeightInfo, ctx: Context) -> Step:
        raise NotImplementedError

    def requantize(self, step: Step, q: QuantizedTensor, ctx: Context) -> Held:
        raise NotImplementedError(f"{self.name} plans no requantization")

    def dequantize(self, step: Step, q: QuantizedTensor, ctx: Context) -> Held:
        """Dense weights in step.dtype from the float32 product (every engine here does that), the codes
        decoded with `step.reads_as` where the loader misreads them."""
        if step.reads_as is not None:
            q = replace(q, scheme=step.reads_as)
        return held_dense(resolve(q, step.dtype))

    def apply(self, step: Step, q: QuantizedTensor, ctx: Context) -> Held:
        """What the engine holds for a weight whose plan is `step` (never called with FAIL)."""
        if step.action is Action.KEEP:
            return held_quantized(q)
        if step.action is Action.REQUANTIZE:
            return self.requantize(step, q, ctx)
        if step.action is Action.DEQUANTIZE:
            return self.dequantize(step, q, ctx)
        raise ValueError(f"{self.name}: a failed step has nothing to apply ({step.why})")
