"""Native or emulated: which matrix-unit path a chip runs an encoding's weights on, and at which peak."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..quant import ScaleStorage
from .chips import Chip, Column, Figure, MatmulPath
from .memory import Encoding

# (element format, scale storage) -> native paths to try, best first. MX FP8 falls back to FP8 MMA with
# the E8M0 scales widened to fp32 in software (Hopper), which chips.md §6 counts as native FP8.
_PATHS = {
    ("float8_e4m3fn", ScaleStorage.FLOAT32): (MatmulPath.FP8_BLOCK,),
    ("float8_e4m3fn", ScaleStorage.BFLOAT16): (MatmulPath.FP8_BLOCK,),
    ("float8_e4m3fn", ScaleStorage.E8M0): (MatmulPath.MXFP8, MatmulPath.FP8_BLOCK),
    ("float6_e2m3fn", ScaleStorage.E8M0): (MatmulPath.MXFP6,),
    ("float6_e3m2fn", ScaleStorage.E8M0): (MatmulPath.MXFP6,),
    ("float4_e2m1fn", ScaleStorage.E8M0): (MatmulPath.MXFP4,),
    ("float4_e2m1fn", ScaleStorage.E4M3_TENSOR): (MatmulPath.NVFP4,),
    ("hifloat8", ScaleStorage.FLOAT32): (MatmulPath.HIF8,),
}


class Execution(enum.Enum):
    NATIVE = "native"
    EMULATED = "emulated"  # weight-only: dequantize to BF16, BF16 matmul, smaller weight bytes


@dataclass(frozen=True)
class Choice:
    execution: Execution
    path: MatmulPath  # the path the matmuls run on (BF16 when emulated)
    peak: Figure  # the chip's throughput column for that path

    @property
    def column(self) -> Column:
        return self.path.column


def native_paths(enc: Encoding) -> tuple[MatmulPath, ...]:
    if enc.weight is None:
        return (MatmulPath.BF16,)
    return _PATHS.get((enc.weight.element.name, enc.weight.storage), ())


def choose(chip: Chip, enc: Encoding) -> Choice:
    for path in native_paths(enc):
        if chip.runs(path):
            return Choice(Execution.NATIVE, path, chip.throughput[path.column])
    return Choice(Execution.EMULATED, MatmulPath.BF16, chip.throughput[Column.BF16])
