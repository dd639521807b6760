"""Pieces shared by the layouts that store a weight as one code tensor plus one scale grid
(deepseek, compressed-tensors, fp8port): naming, header checks, reading, and the writer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

from ...codec.packing import pack, unpack
from ...errors import CheckpointError, LayoutError
from ...formats import FORMATS, FormatSpec, Kind
from ...quant import QuantizedTensor, Role, ScaleStorage, Scheme
from ...quant import storage as scale_store
from ...quant.tensor import Framework
from ..folder import Checkpoint
from ..safetensors_io import TensorInfo
from .base import NonFinitePolicy, Output, StoredWeight, Writer

# safetensors dtypes that only quantized weights use (a folder holding them is not dense): every
# element format's own dtype but the integer one
QUANTIZED_DTYPES = tuple(f.safetensors for f in FORMATS.values() if f.safetensors and f.kind is not Kind.INT)
# how a stored scale grid's safetensors dtype is read: each storage's own dtype, F16 multipliers as
# float32, E8M0 bytes also as plain U8 (AscendV1, compressed-tensors MX)
SCALE_STORAGE = {s.safetensors: s for s in (ScaleStorage.FLOAT32, ScaleStorage.BFLOAT16, ScaleStorage.E8M0)} | {
    "F16": ScaleStorage.FLOAT32,
    "U8": ScaleStorage.E8M0,
}


def base_name(weight: str) -> str:
    """'x.weight' -> 'x' (the module a weight and its companions belong to)."""
    return weight[: -len(".weight")] if weight.endswith(".weight") else weight


def code_output(name: str, shape: tuple[int, ...], element: FormatSpec) -> Output:
    """The code tensor of a weight: the element's safetensors dtype (F4 / F6 count elements), else
    U8 bytes, packed along the last axis for sub-byte elements that have no safetensors dtype (E1M2)."""
    dtype = element.safetensors or "U8"
    if element.bits < 8 and dtype == "U8":
        shape = tuple(shape[:-1]) + (shape[-1] * element.bits // 8,)
    return name, dtype, tuple(shape)


def logical_shape(info: TensorInfo, element: FormatSpec) -> tuple[int, ...]:
    """A code tensor's element shape (the inverse of `code_output`)."""
    if element.bits < 8 and info.dtype == "U8":
        return tuple(info.shape[:-1]) + (info.shape[-1] * 8 // element.bits,)
    return tuple(info.shape)


def check_packable(name: str, shape: tuple[int, ...], element: FormatSpec) -> None:
    if element.bits < 8 and math.prod(shape) * element.bits % 8:
        raise CheckpointError(
            f"tensor {name!r} {list(shape)}: {math.prod(shape)} {element.name} codes do not "
            "fill whole bytes; exclude it (--exclude) or choose an 8-bit preset"
        )


def pack_codes(q: QuantizedTensor) -> np.ndarray:
    codes = np.asarray(q.codes, np.uint8)
    return pack(codes.reshape(-1), q.scheme.element) if q.scheme.element.bits < 8 else codes


def read_codes(ckpt: Checkpoint, name: str, shape: tuple[int, ...], element: FormatSpec) -> np.ndarray:
    raw = ckpt.read(name)
    if element.bits < 8:
        return unpack(raw.reshape(-1), element)[: math.prod(shape)].reshape(shape)
    return np.ascontiguousarray(raw).view(np.uint8).reshape(shape)


def check_grid(ckpt: Checkpoint, weight: str, scale: str, shape, scheme: Scheme, stored_shape=None) -> None:
    """The scale tensor's shape fits the weight's grid (headers only). stored_shape: how the layout
    stores that grid, where not as the grid itself (compressed-tensors' per-tensor [1])."""
    want = scheme.block.grid(shape)
    got = tuple(ckpt.info(scale).shape)
    if got != tuple(stored_shape or want):
        raise CheckpointError(
            f"{ckpt.tensors[scale][0]}: scale {scale!r} has grid {list(got)}, but weight "
            f"{weight!r} {list(shape)} in {scheme.block} blocks needs {list(stored_shape or want)}"
        )


def scale_storage(ckpt: Checkpoint, scale: str, allowed: tuple[str, ...], what: str) -> ScaleStorage:
    """How a scale tensor is stored, from its dtype (one of `allowed`)."""
    dtype = ckpt.info(scale).dtype
    if dtype not in allowed:
        raise CheckpointError(
            f"{ckpt.tensors[scale][0]}: scale {scale!r} is {dtype}; {what} scales are {' or '.join(allowed)}"
        )
    return SCALE_STORAGE[dtype]


def read_scales(ckpt: Checkpoint, scale: str, w: StoredWeight) -> tuple[np.ndarray, np.ndarray]:
    """(stored grid, float32 multipliers) of a weight, every multiplier finite and positive."""
    raw = ckpt.read(scale).reshape(w.scheme.block.grid(w.shape))
    if w.scheme.storage is ScaleStorage.E8M0:
        stored = np.ascontiguousarray(raw).view(np.uint8).view(ml_dtypes.float8_e8m0fnu)
    else:
        stored = raw
    return stored, checked(ckpt, scale, scale_store.load(stored, w.scheme.storage))


def checked(ckpt: Checkpoint, scale: str, s: np.ndarray) -> np.ndarray:
    ok = np.isfinite(s) & (s > 0)
    if not ok.all():
        bad = tuple(int(b) for b in np.argwhere(~ok)[0])
        raise CheckpointError(
            f"{ckpt.tensors[scale][0]}: scale {scale!r} has {s[bad]!r} at block {bad}; "
            "stored scales must be finite and positive"
        )
    return s


def block_tensor(codes, stored, s, w: StoredWeight, tensor_scale: float | None = None) -> QuantizedTensor:
    return QuantizedTensor(
        codes=codes,
        scale=stored,
        scale_fp32=np.asarray(s, np.float32),
        shape=tuple(w.shape),
        scheme=w.scheme,
        role=Role.WEIGHT,
        src_dtype="float32",
        framework=Framework.NUMPY,
        tensor_scale=tensor_scale,
    )


def all_powers_of_two(s: np.ndarray) -> bool:
    m, _ = np.frexp(np.asarray(s, np.float64))
    return bool(np.all((m == 0.5) & np.isfinite(s)))


def fp8_preset(ckpt: Checkpoint, weights: dict[str, StoredWeight]) -> dict:
    """inspect's guess for FP8 block layouts: deepseek-v3.1 when every scale is a power of two (the
    scale tensors are read: they are small), else deepseek-v3."""
    if not weights:
        return {}
    pow2 = all(
        w.scheme.storage is ScaleStorage.E8M0 or all_powers_of_two(ckpt.read(w.parts["scale"]).astype(np.float32))
        for w in weights.values()
    )
    deepseek = all(str(w.scheme.block) == "128x128" for w in weights.values())
    return {
        "preset": ("deepseek-v3.1" if pow2 else "deepseek-v3") if deepseek else None,
        "scales_all_powers_of_two": pow2,
    }


def grid_weights(ckpt: Checkpoint, scale_suffix: str, make) -> dict[str, StoredWeight]:
    """Weights stored as `X.weight` codes beside an `X.<scale_suffix>` scale tensor.

    make(weight name, scale name) -> StoredWeight (checks dtypes and grid). A quantized-looking
    `*.weight` without its scale, or a scale without its weight, is an error naming both."""
    out = {}
    suffix = "." + scale_suffix
    for n in ckpt.tensors:
        if n.endswith(suffix):
            w = n[: -len(suffix)] + ".weight"
            if w not in ckpt.tensors and n[: -len(suffix)] in ckpt.tensors:  # a parameter without .weight (experts)
                w = n[: -len(suffix)]
            if w not in ckpt.tensors:
                raise CheckpointError(f"{ckpt.tensors[n][0]}: scale {n!r} has no weight {w!r}")
            out[w] = make(w, n)
    for n, (f, info) in ckpt.tensors.items():
        if n not in out and n.endswith(".weight") and info.dtype in QUANTIZED_DTYPES:
            raise CheckpointError(
                f"{f}: quantized weight {n!r} ({info.dtype}) has no scale tensor {base_name(n) + suffix!r}"
            )
    return out


@dataclass
class GridWriter(Writer):
    """Writes `X.weight` codes and one `X.<scale_suffix>` scale grid (plus NVFP4's tensor scale)."""

    scale_suffix: str = "weight_scale"
    tensor_scale_suffix: str = "weight_tensor_scale"

    def hold(self, name, shape, scheme):
        check_packable(name, shape, scheme.element)
        return scheme

    def scale_shape(self, shape: tuple[int, ...], scheme: Scheme) -> tuple[int, ...]:
        return scheme.block.grid(shape)

    def outputs(self, name, shape, scheme):
        base = base_name(name)
        out = [
            code_output(name, shape, scheme.element),
            (f"{base}.{self.scale_suffix}", scheme.storage.safetensors, self.scale_shape(shape, scheme)),
        ]
        if scheme.storage.tensor_scale_bytes:
            out.append((f"{base}.{self.tensor_scale_suffix}", "F32", ()))
        return out

    def arrays(self, name, q):
        out = [pack_codes(q), np.asarray(q.scale).reshape(self.scale_shape(q.shape, q.scheme))]
        if q.scheme.storage.tensor_scale_bytes:
            out.append(np.asarray([q.tensor_scale], np.float32).reshape(()))
        return out


def cannot_hold(layout: str, scheme: Scheme, why: str) -> LayoutError:
    """The typed error of a writer's `hold`; it carries the scheme so that the planner can name the
    layouts that hold it."""
    e = LayoutError(
        f"the {layout} layout cannot hold {scheme.name} ({scheme.element.name}, {scheme.block} "
        f"blocks, {scheme.storage.value} scales): {why}"
    )
    e.scheme = scheme
    return e


# input scales of static NVFP4 activations, by part role: ModelOpt stores a multiplier, compressed-tensors
# a divisor (`input_global_scale`); each writer converts to its own with one float32 reciprocal
INPUT_SCALE_ROLES = {"input_scale": False, "input_global_scale": True}  # role -> is a divisor


@dataclass
class Nvfp4Writer(GridWriter):
    """A GridWriter for layouts whose NVFP4 tensor scale engines share over fused sets (q/k/v, gate/up):
    the amax of each set is found once while planning (`review`), before any shard is written; static
    input scales of the source are read then too, so that shards need nothing but their own tensors."""

    divisor: bool = False  # this layout's tensor scale convention (compressed-tensors: True)
    amax: dict = field(default_factory=dict)  # weight -> its fused set's amax
    inputs: dict = field(default_factory=dict)  # weight -> the source's input scale, in this layout's convention

    def input_scale(self, name: str) -> np.float32 | None:
        """The source weight's static input scale in this layout's convention (read while planning)."""
        w = self.source.weights.get(name) if self.source is not None else None
        role = next((r for r in INPUT_SCALE_ROLES if r in w.parts), None) if w is not None else None
        if role is not None and name not in self.inputs:
            ckpt, t = self.source.ckpt, w.parts[role]
            v = checked(ckpt, t, ckpt.read(t).astype(np.float32).reshape(-1))[0]
            self.inputs[name] = v if INPUT_SCALE_ROLES[role] == self.divisor else np.float32(1) / v
        return self.inputs.get(name)

    def review(self, jobs):
        from .fused import tensor_amax

        super().review(jobs)
        fp4 = [j for j in jobs if j.scheme is not None and j.scheme.storage is ScaleStorage.E4M3_TENSOR]
        self.amax = tensor_amax(self.source, fp4)
        want = self.preset.weight.scale_rule if self.preset else None
        if any(j.weight is None and want is not None and j.scheme.scale_rule is not want for j in fp4):
            self.notes.append(
                f"NVFP4 quantized with this layout's own rule ({fp4[0].scheme.scale_rule.value}: its "
                f"tensor scale convention), not {want.value}"
            )

    def encode(self, name, x, scheme, nonfinite):
        if scheme.storage is not ScaleStorage.E4M3_TENSOR:
            return super().encode(name, x, scheme, nonfinite)
        from ...quant import reference

        x = np.asarray(x)
        codes, stored, s, t = reference.quantize(
            x.astype(np.float32),
            scheme,
            check=nonfinite is not NonFinitePolicy.KEEP,
            tensor_amax=self.amax.get(name),
            dtype="bfloat16" if x.dtype == ml_dtypes.bfloat16 else "float32",
        )
        return QuantizedTensor(
            codes=codes,
            scale=stored,
            scale_fp32=s,
            shape=tuple(x.shape),
            scheme=scheme,
            role=Role.WEIGHT,
            src_dtype="float32",
            framework=Framework.NUMPY,
            tensor_scale=float(t),
        )
