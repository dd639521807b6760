"""DeepSeek-V4 FP4 routed experts: our reading and our exact FP4 -> FP8 conversion against the
transcription of DeepSeek's own code (tests/peers/deepseek_v4.py, source commits cited there)."""

from __future__ import annotations

import numpy as np
import pytest

from fp8port.codec.packing import pack, unpack
from fp8port.codec.reference import decode
from fp8port.formats import get_format
from fp8port.quant.fp4_to_fp8 import fp4_to_fp8
from fp8port.quant.storage import e8m0_values

torch = pytest.importorskip("torch")
from tests.peers import deepseek_v4 as ds  # noqa: E402

E2M1, E4M3 = get_format("float4_e2m1fn"), get_format("float8_e4m3fn")


def _expert(rng, n=256, k=384, spread=(110, 140)):
    """A random FP4 expert as the checkpoint holds it: I8 [n, k/2] and E8M0 bytes [n, k/32]."""
    codes = rng.integers(0, 16, (n, k), dtype=np.uint8)
    scale = rng.integers(*spread, (n, k // 32), dtype=np.uint8)
    return (
        codes,
        scale,
        torch.from_numpy(pack(codes, "float4_e2m1fn").view(np.int8)),
        torch.from_numpy(scale).view(torch.float8_e8m0fnu),
    )


def test_fp4_expert_reading_equals_deepseek(rng=np.random.default_rng(0)):
    codes, scale, packed, s = _expert(rng)
    assert np.array_equal(unpack(packed.numpy().view(np.uint8), "float4_e2m1fn"), codes)  # low nibble = even k
    ours = decode(codes, E2M1) * np.repeat(e8m0_values(scale), 32, axis=1) + np.float32(0)  # its table: +0
    theirs = ds.dequantize_fp4(packed, s).numpy()
    assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fp4_to_fp8_equals_deepseek_converter(seed):
    rng = np.random.default_rng(seed)
    codes, scale, packed, s = _expert(rng)  # scales span 30 binades: some tiles are lossy
    scale[:128, :4] = 200  # one tile whose largest block is far above the rest
    s = torch.from_numpy(scale).view(torch.float8_e8m0fnu)
    w8, s8 = ds.cast_fp4_to_fp8(packed, s)
    got = fp4_to_fp8(codes, scale)
    assert np.array_equal(got.codes, w8.view(torch.uint8).numpy())
    assert np.array_equal(got.scale, s8.view(torch.uint8).numpy())
    assert got.lossless is False  # 200 vs 110: offsets far below 2^-8 in that tile


def test_fp4_to_fp8_is_lossless_within_14_binades(rng=np.random.default_rng(5)):
    codes, scale, packed, s = _expert(rng, spread=(120, 135))  # at most 14 binades apart per tile
    got = fp4_to_fp8(codes, scale)
    assert got.lossless
    fp8 = decode(got.codes, E4M3) * np.repeat(np.repeat(e8m0_values(got.scale), 128, 0), 128, 1)
    assert np.array_equal(fp8.view(np.uint32), ds.dequantize_fp4(packed, s).numpy().view(np.uint32))
    w8, s8 = ds.cast_fp4_to_fp8(packed, s)  # DeepSeek's own FP8 reading of its own output agrees
    assert np.array_equal(fp8.view(np.uint32), ds.dequantize_fp8(w8, s8).numpy().view(np.uint32))


def test_fp4_to_fp8_edges():
    """Golden tiles (one 128x128 tile, 4 blocks per row):
    * span 14 binades (bytes 113 and 127): 0.5 * 2^-8 = 2^-9, E4M3's smallest subnormal: exact;
    * span 15 (bytes 112 and 127): 0.5 * 2^-9 rounds to 0 (ties to even): lossy;
    * largest byte 3 (< 6): DeepSeek's tile scale 2^-130 underflows E8M0 (it stores byte 0 but keeps
      codes for 2^-130); ours stores byte 0 and codes for it, so the values survive."""
    codes = np.full((128, 128), 1, np.uint8)  # every element 0.5
    for low, lossless in ((113, True), (112, False)):
        scale = np.full((128, 4), 127, np.uint8)
        scale[:, 0] = low
        got = fp4_to_fp8(codes, scale)
        assert got.lossless is lossless and got.scale.tolist() == [[121]]
        assert got.codes[0, 0] == (0x01 if lossless else 0x00)  # 2^-9, or 0 (ties to even)
        assert got.codes[0, 127] == 0x60  # 32 = 0.5 * 2^6
    tiny = fp4_to_fp8(codes, np.full((128, 4), 3, np.uint8))
    assert tiny.lossless and tiny.scale.tolist() == [[0]]
    assert decode(tiny.codes[:1, :1], E4M3)[0, 0] * e8m0_values(tiny.scale)[0, 0] == np.float32(2.0**-125)
    with pytest.raises(Exception, match="0xFF"):
        fp4_to_fp8(codes, np.full((128, 4), 255, np.uint8))
