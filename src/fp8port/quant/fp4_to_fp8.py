"""DeepSeek-V4's FP4 routed experts (E2M1, 1x32 E8M0 scales) as FP8 E4M3 with 128x128 E8M0 scales.

DeepSeek's converter (`inference/convert.py`, `cast_e2m1fn_to_e4m3fn`) keeps the values: per 128x128
tile it takes the largest 1x32 scale byte b_max, stores the tile scale 2^(b_max - 127 - 6) and
multiplies every E2M1 value by its block's offset 2^(b - b_max + 6) <= 2^6, so the largest value is
6 * 64 = 384 <= 448. Each product is exact in E4M3 unless an offset is below 2^-8 (a block scale 15 or
more binades under its tile's largest), where 0.5 * offset falls under E4M3's 2^-9 subnormal step;
`lossless` reports that. Bytes equal DeepSeek's converter on every tile whose b_max >= 6 (their float
2^(b_max - 133) would underflow E8M0; here the tile scale stops at 2^-127 and offsets grow to match).
E2M1's -0 becomes E4M3 +0 (DeepSeek's FP4 table maps code 8 to 0.0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codec.profiles import resolve
from ..codec.reference import decode, encode
from ..errors import ShapeError, UnsupportedInputError
from ..formats import get_format

E2M1 = get_format("float4_e2m1fn")
E4M3, _E4M3_RULES = resolve("float8_e4m3fn")
FP4_BLOCK = 32
TILE = 128
# offsets up to 2^OFFSET keep E2M1's max inside E4M3's: 6 * 2^6 = 384 <= 448 < 6 * 2^7
OFFSET = int(np.floor(np.log2(E4M3.max / E2M1.max)))


@dataclass(frozen=True)
class Fp8Experts:
    codes: np.ndarray  # uint8 E4M3 codes [N, K]
    scale: np.ndarray  # uint8 E8M0 bytes [N / 128, K / 128]
    lossless: bool  # every value kept exactly


def fp4_to_fp8(codes, scale_bytes, tile: int = TILE) -> Fp8Experts:
    """E2M1 codes [N, K] (one per byte, unpacked) with E8M0 bytes [N, K/32] -> E4M3 with tile scales.

    Args:
        codes: uint8 E2M1 codes, N and K multiples of `tile`.
        scale_bytes: uint8 E8M0 scale bytes, one per 1x32 block along K (0xFF, NaN, is refused).
        tile: the FP8 block edge (DeepSeek: 128).
    Returns:
        Fp8Experts(codes, scale, lossless).
    """
    c = np.asarray(codes, np.uint8)
    b = np.asarray(scale_bytes, np.uint8)
    if c.ndim != 2 or c.shape[0] % tile or c.shape[1] % tile or tile % FP4_BLOCK:
        raise ShapeError(f"FP4 experts {c.shape}: both dimensions must be multiples of the {tile} tile")
    n, k = c.shape
    if b.shape != (n, k // FP4_BLOCK):
        raise ShapeError(f"scale shape {b.shape} does not match codes {c.shape} (need {(n, k // FP4_BLOCK)})")
    if (b == 0xFF).any():
        i = tuple(int(j) for j in np.argwhere(b == 0xFF)[0])
        raise UnsupportedInputError(f"E8M0 scale at block {i} is 0xFF (NaN): no FP8 value holds it")
    per = tile // FP4_BLOCK
    tile_max = b.astype(np.int64).reshape(n // tile, tile, k // tile, per).max(axis=(1, 3))
    tile_byte = np.maximum(tile_max - OFFSET, 0)
    d = b.astype(np.int64) - np.repeat(np.repeat(tile_byte, tile, 0), per, 1)  # offset exponent per block
    v = decode(c, E2M1).astype(np.float64) + 0.0  # -0 + 0 = +0
    y = v * np.ldexp(1.0, np.repeat(d, FP4_BLOCK, axis=1))
    out = encode(y, E4M3, _E4M3_RULES)
    lossless = bool(np.array_equal(decode(out, E4M3).astype(np.float64), y))
    return Fp8Experts(out, tile_byte.astype(np.uint8), lossless)
