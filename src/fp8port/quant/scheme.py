"""A quantization scheme as one frozen value: element format, blocks, scale rule, storage.

Every name is parsed into an enum here, at the boundary; the reference and fast paths
only ever see the resolved `Scheme`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace

from ..codec.profiles import Rules, resolve
from ..errors import ShapeError, UnknownNameError
from ..formats import FormatSpec, get_format
from ..names import NamedEnum
from .rules import ScaleRule


class ScaleStorage(NamedEnum):
    """How the per-block scale is stored (`QuantizedTensor.scale`)."""

    __label__ = "scale storage"
    __aliases__ = {
        "float32": ("f32", "fp32"),
        "bfloat16": ("bf16",),
        "float16": ("f16", "fp16"),
        "e8m0": ("ue8m0", "float8_e8m0fnu"),
    }
    FLOAT32 = "float32"  # DeepSeek V3/V3.1 checkpoints (`weight_scale_inv`, F32)
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"  # GGUF Q8_0's per-block `d`
    E8M0 = "e8m0"  # one float8_e8m0fnu byte: 2^(b-127), 0xFF NaN (OCP MX, DeepSeek V4)
    E4M3_TENSOR = "e4m3_tensor"  # NVFP4: float8_e4m3fn per block plus one fp32 per tensor

    @property
    def safetensors(self) -> str:
        """The safetensors dtype of one stored block scale."""
        return _STORED[self][0]

    @property
    def nbytes(self) -> int:
        """Bytes of one stored block scale."""
        return _STORED[self][1]

    @property
    def tensor_scale_bytes(self) -> int:
        """Bytes stored once per tensor beside the block scales (NVFP4's float32 tensor scale)."""
        return 4 if self is ScaleStorage.E4M3_TENSOR else 0


def _stored(fmt: str) -> tuple[str, int]:
    spec = get_format(fmt)
    return spec.safetensors, spec.bits // 8


# The one table of scale storage: safetensors dtype and bytes per block scale.
_STORED = {
    ScaleStorage.FLOAT32: ("F32", 4),
    ScaleStorage.BFLOAT16: ("BF16", 2),
    ScaleStorage.FLOAT16: ("F16", 2),
    ScaleStorage.E8M0: _stored("float8_e8m0fnu"),
    ScaleStorage.E4M3_TENSOR: _stored("float8_e4m3fn"),
}


class Apply(NamedEnum):
    """How the element values are formed from x and the block scale s (float32 arithmetic)."""

    __label__ = "apply mode"
    DIVIDE = "divide"  # y = x / s (DeepSeek-V3 kernel.py, torchao FLOOR)
    RECIPROCAL = "reciprocal"  # y = x * fp32(1/s) (DeepGEMM per_token_cast_to_fp8)
    # msModelSlim's (reference path only)
    BF16_DIVIDE = "bf16_divide"  # y = bf16(x / s) + 0: int_quantize / fp8_quantize on a bf16 model
    MSMODELSLIM_MXFP8 = "msmodelslim_mxfp8"  # y = x / s, a zero quotient +0: mxfp_per_block_quantize
    MSMODELSLIM_MXFP4 = "msmodelslim_mxfp4"  # y = x / s, a zero input +0 (sign(x) * |y|): mxfp4_quantize
    # y = x * fp32(1/s) with s as the rule gave it, before its storage rounds it, and 0 where s = 0
    # (ggml quantize_row_q8_0_ref: codes from the float32 d, d then stored as fp16)
    RECIPROCAL_UNROUNDED = "reciprocal_unrounded"


class ZeroBlock(NamedEnum):
    """The scale of a block whose amax is exactly zero."""

    __label__ = "zero-block behaviour"
    RULE = "rule"  # whatever the rule gives after the amax clamp (DeepSeek: 2^-22; OCP: 2^-127)
    UNIT = "unit"  # scale 1 (E8M0 byte 0x7F): a neutral byte for padding and masked rows


class BlockKind(enum.Enum):
    TENSOR = "tensor"  # one scale for the whole tensor
    ROW = "row"  # one scale per slice along `axis` (the whole axis is one block): per-channel
    VECTOR = "vector"  # 1 x N along `axis`
    TILE = "tile"  # N x M over the last two axes


_VEC = re.compile(r"^1x(\d+)$")
_TILE = re.compile(r"^(\d+)x(\d+)$")
_AXIS = re.compile(r"^(.*)\(axis=(-?\d+)\)$")  # str(BlockShape) of a ROW / VECTOR block


@dataclass(frozen=True)
class BlockShape:
    kind: BlockKind
    size: tuple[int, ...] = ()  # VECTOR: (N,); TILE: (N, M)
    axis: int = -1  # VECTOR / ROW only

    @classmethod
    def parse(cls, value, axis: int = -1) -> BlockShape:
        """'tensor', 'row', '1x128' (along `axis`), '128x128' (last two axes); also what str() gives."""
        if isinstance(value, BlockShape):
            return value
        key = str(value).strip().lower().replace(" ", "").replace("*", "x")
        m = _AXIS.match(key)
        if m:
            key, axis = m.group(1), int(m.group(2))
        if key in ("tensor", "per_tensor", "per-tensor"):
            return cls(BlockKind.TENSOR)
        if key in ("row", "per_row", "per-row", "channel", "per_channel", "per-channel"):
            return cls(BlockKind.ROW, axis=axis)
        m = _VEC.match(key)
        if m and int(m.group(1)) > 0:
            return cls(BlockKind.VECTOR, (int(m.group(1)),), axis)
        m = _TILE.match(key)
        if m and int(m.group(1)) > 0 and int(m.group(2)) > 0:
            return cls(BlockKind.TILE, (int(m.group(1)), int(m.group(2))))
        raise UnknownNameError("block shape", value, ["tensor", "row", "1xN (e.g. 1x128)", "NxM (e.g. 128x128)"])

    def __str__(self) -> str:
        if self.kind is BlockKind.TENSOR:
            return "per-tensor"
        if self.kind is BlockKind.ROW:
            return f"per-row(axis={self.axis})"
        if self.kind is BlockKind.VECTOR:
            return f"1x{self.size[0]}(axis={self.axis})"
        return f"{self.size[0]}x{self.size[1]}"

    def extents(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Block extent along every axis of `shape` (1 where the block does not span it).

        Raises ShapeError where the block cannot be applied to a tensor of this rank.
        """
        nd = len(shape)
        if self.kind is BlockKind.TENSOR:
            return tuple(max(d, 1) for d in shape)
        if self.kind is BlockKind.TILE:
            if nd < 2:
                raise ShapeError(f"a {self} tile block needs at least 2 dimensions; got shape {tuple(shape)}")
            return (1,) * (nd - 2) + tuple(self.size)
        if not -nd <= self.axis < nd:
            raise ShapeError(f"block {self} needs axis {self.axis} but the input has shape {tuple(shape)}")
        ax = self.axis % nd
        ext = [1] * nd
        ext[ax] = max(shape[ax], 1) if self.kind is BlockKind.ROW else self.size[0]
        return tuple(ext)

    def grid(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The scale grid of a tensor of `shape`: ceil(dim / extent) per axis (partial blocks count)."""
        return tuple(-(-d // e) for d, e in zip(shape, self.extents(tuple(shape))))


@dataclass(frozen=True)
class Scheme:
    """Everything that decides the bytes of a block-scaled tensor."""

    name: str
    element: FormatSpec
    rules: Rules  # element rounding / overflow / NaN (from the codecs)
    scale_rule: ScaleRule
    block: BlockShape
    storage: ScaleStorage = ScaleStorage.FLOAT32
    amax_clamp: float | None = None  # amax = max(amax, clamp) before the rule (DeepSeek: 1e-4)
    exp_range: tuple[int, int] = (-127, 127)  # unbiased scale exponents a power-of-two rule may give
    apply: Apply = Apply.DIVIDE
    zero_block: ZeroBlock = ZeroBlock.RULE
    description: str = ""

    def __post_init__(self):
        from ..errors import ProfileError

        if self.storage is ScaleStorage.E8M0 and not self.scale_rule.power_of_two:
            raise ProfileError(
                f"scale rule {self.scale_rule.value} gives non-power-of-two scales; "
                "E8M0 storage needs one of: " + ", ".join(r.value for r in ScaleRule if r.power_of_two)
            )
        if (self.storage is ScaleStorage.E4M3_TENSOR) != (self.scale_rule in (ScaleRule.NVFP4, ScaleRule.CT_NVFP4)):
            raise ProfileError("the nvfp4 / ct_nvfp4 scale rules and e4m3_tensor storage go together")
        lo, hi = self.exp_range
        if not -127 <= lo <= hi <= 127:
            raise ProfileError(f"exp_range {self.exp_range} must lie within [-127, 127]")

    @classmethod
    def build(
        cls,
        element,
        scale_rule,
        block,
        *,
        storage="float32",
        name="custom",
        profile=None,
        rounding=None,
        overflow=None,
        amax_clamp=None,
        exp_range=(-127, 127),
        apply="divide",
        zero_block="rule",
        axis=-1,
        description="",
    ) -> Scheme:
        """Parse user names into a Scheme (the one place strings are read)."""
        spec, rules = resolve(element, profile, rounding, overflow)
        return cls(
            name=name,
            element=spec,
            rules=rules,
            scale_rule=ScaleRule.parse(scale_rule),
            block=BlockShape.parse(block, axis),
            storage=ScaleStorage.parse(storage),
            amax_clamp=None if amax_clamp is None else float(amax_clamp),
            exp_range=tuple(exp_range),
            apply=Apply.parse(apply),
            zero_block=ZeroBlock.parse(zero_block),
            description=description,
        )

    def with_(self, **changes) -> Scheme:
        """A copy with some fields changed; string values are parsed like in `build`."""
        parsers = {
            "scale_rule": ScaleRule.parse,
            "storage": ScaleStorage.parse,
            "apply": Apply.parse,
            "zero_block": ZeroBlock.parse,
            "block": BlockShape.parse,
        }
        return replace(self, **{k: parsers[k](v) if k in parsers else v for k, v in changes.items()})

    @classmethod
    def from_description(cls, d: dict) -> Scheme:
        """The scheme `describe()` gave (what self-describing checkpoints store)."""
        return cls.build(
            d["element"],
            d["scale_rule"],
            d["block"],
            storage=d["storage"],
            name=str(d["name"]),
            rounding=d["rounding"],
            overflow=d["overflow"],
            amax_clamp=d["amax_clamp"],
            exp_range=tuple(int(e) for e in d["exp_range"]),
            apply=d["apply"],
            zero_block=d["zero_block"],
            description=str(d.get("description", "")),
        )

    def describe(self) -> dict:
        return {
            "name": self.name,
            "element": self.element.name,
            "rounding": self.rules.rounding.value,
            "overflow": self.rules.overflow.value,
            "scale_rule": self.scale_rule.value,
            "block": str(self.block),
            "storage": self.storage.value,
            "amax_clamp": self.amax_clamp,
            "exp_range": list(self.exp_range),
            "apply": self.apply.value,
            "zero_block": self.zero_block.value,
            "description": self.description,
        }
