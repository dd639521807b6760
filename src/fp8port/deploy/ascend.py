"""Which AscendV1 quant types (`fp8port convert --layout ascend --preset TYPE`) a chip runs.

Read off the chip's native matrix paths (chips.json): the MX types need the 950's block-scaled
MMA (ascend-layout.md §2.6, §2.7: "A5"), the int8 types the 910B/910C int8 units (§4.2: the
A2/A3 path), and W8A16 only a bf16 GEMM after dequantizing int8 weights.
"""

from __future__ import annotations

from .chips import Chip, MatmulPath

TYPES_BY_PATH = {
    MatmulPath.MXFP8: ("W8A8_MXFP8",),
    MatmulPath.MXFP4: ("W4A8_MXFP", "W4A4_MXFP4"),
    MatmulPath.INT8: ("W8A8_DYNAMIC", "W8A8"),
    MatmulPath.BF16: ("W8A16",),
}


def ascend_types(chip: Chip) -> tuple[str, ...]:
    """AscendV1 types for a Huawei Ascend chip, best first; () for any other vendor."""
    if chip.vendor != "Huawei":
        return ()
    return tuple(t for path, types in TYPES_BY_PATH.items() if chip.runs(path) for t in types)
