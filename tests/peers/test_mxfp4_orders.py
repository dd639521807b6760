"""MXFP4 byte orders of gpt-oss, compressed-tensors and GGUF, against each one's own code (main venv).

* gpt-oss: transformers' MXFP4 integration dequantizes a gpt-oss folder (oracles.gpt_oss_mxfp4);
  our low-first unpack + E8M0 scale + transpose must give its experts bit for bit.
* compressed-tensors: per expert, gpt-oss's gate rows (even rows of gate_up) are a `weight_packed`
  byte for byte; compressed-tensors' own MXFP4 decompressor must read them as transformers does.
* GGUF: the `gguf` package's own MXFP4 dequantize / quantize (block: E8M0 byte + 16 bytes, element j
  low nibble, j + 16 high).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fp8port import quantize
from fp8port.codec.packing import from_gguf_mxfp4_blocks, gguf_mxfp4_blocks, pack, unpack
from fp8port.codec.reference import decode
from fp8port.errors import ShapeError, UnknownNameError, UnsupportedInputError
from fp8port.formats import get_format
from fp8port.quant.storage import e8m0_values
from tests.peers import oracles
from tests.peers.oracles import bits_equal, load_numpy

BF16 = ml_dtypes.bfloat16
E2M1 = get_format("float4_e2m1fn")
PREFIX = "model.layers.0.mlp.experts."


def _mx_values(codes: np.ndarray, scale_bytes: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # byte 254 (2^127) times 6 is Inf, in every reader
        return (decode(codes, E2M1) * np.repeat(e8m0_values(scale_bytes), 32, axis=-1)).astype(np.float32)


@pytest.fixture(scope="module")
def gpt_oss():
    pytest.importorskip("transformers")
    folder = oracles.gpt_oss_mxfp4()
    return load_numpy(folder / "model.safetensors"), load_numpy(folder / oracles.DEQUANT)


@pytest.mark.parametrize("proj", ["gate_up_proj", "down_proj"])
def test_gpt_oss_low_first_transposed_equals_transformers(gpt_oss, proj):
    disk, theirs = gpt_oss
    blocks, scales = disk[PREFIX + proj + "_blocks"], disk[PREFIX + proj + "_scales"]
    e, n, g, b = blocks.shape
    assert (b, scales.shape) == (16, (e, n, g))  # [E, N, K/32, 16] and [E, N, K/32]
    codes = unpack(blocks.reshape(e, n, g * b), "float4_e2m1fn")  # element 2i in the low nibble
    ours = _mx_values(codes, scales).transpose(0, 2, 1)  # transformers keeps experts [E, K, N]
    want = theirs[PREFIX + proj]
    assert want.shape == (e, g * 32, n)
    assert bits_equal(ours.astype(BF16), want)  # -0 included: its table has -0.0 at code 8
    # the fixture holds the E8M0 extremes: 2^-127 (byte 0) and 2^127 (byte 254)
    assert {0, 254} <= set(np.unique(disk[PREFIX + "gate_up_proj_scales"]).tolist())


def test_gpt_oss_gate_rows_are_compressed_tensors_weight_packed(gpt_oss):
    """Repack gpt-oss -> compressed-tensors MXFP4 (per expert, gate = even rows, up = odd rows of
    gate_up): the bytes are copied, and compressed-tensors' own decompressor reads them as
    transformers reads gpt-oss."""
    pytest.importorskip("compressed_tensors")
    import torch
    from compressed_tensors.compressors import MXFP4PackedCompressor
    from compressed_tensors.quantization import QuantizationScheme
    from compressed_tensors.quantization.quant_scheme import MXFP4A16

    disk, theirs = gpt_oss
    blocks, scales = disk[PREFIX + "gate_up_proj_blocks"], disk[PREFIX + "gate_up_proj_scales"]
    dense = theirs[PREFIX + "gate_up_proj"]  # [E, H, 2I]: column 2j gate j, column 2j + 1 up j
    scheme = QuantizationScheme(targets=["Linear"], **MXFP4A16)
    e, n, g, b = blocks.shape
    for expert in range(e):
        for part, rows in (("gate", slice(0, None, 2)), ("up", slice(1, None, 2))):
            packed = np.ascontiguousarray(blocks[expert, rows].reshape(n // 2, g * b))
            sd = {
                "weight_packed": torch.from_numpy(packed),
                "weight_scale": torch.from_numpy(np.ascontiguousarray(scales[expert, rows])),
            }
            got = MXFP4PackedCompressor.decompress(sd, scheme)["weight"]
            got = got.view(torch.int16).numpy().view(BF16)
            want = np.ascontiguousarray(dense[expert][:, rows].T)  # [I, H]
            assert bits_equal(got, want), (expert, part)


def test_gguf_mxfp4_blocks_equal_gguf_dequantize(gpt_oss):
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize

    disk, _ = gpt_oss
    blocks, scales = disk[PREFIX + "down_proj_blocks"], disk[PREFIX + "down_proj_scales"]
    e, n, g, b = blocks.shape
    codes = unpack(blocks.reshape(e * n, g * b), "float4_e2m1fn")
    raw = gguf_mxfp4_blocks(codes, scales.reshape(e * n, g))
    assert raw.shape == (e * n, g, 17)
    with np.errstate(over="ignore"):
        theirs = dequantize(raw.reshape(e * n, g * 17), gguf.GGMLQuantizationType.MXFP4)
    ours = _mx_values(codes, scales.reshape(e * n, g)) + np.float32(0)  # ggml's int8 table has no -0
    assert bits_equal(ours, theirs.astype(np.float32))
    # and back: the GGUF bytes carry exactly gpt-oss's codes and scale bytes
    c2, s2 = from_gguf_mxfp4_blocks(raw)
    assert np.array_equal(c2, codes) and np.array_equal(s2, scales.reshape(e * n, g))


def test_gguf_quantizer_uses_ocp_floor_scales(rng=np.random.default_rng(3)):
    """gguf's own MXFP4 quantizer: E8M0 = floor(log2 amax) - 2 + 127 (OCP FLOOR, our `mxfp4` preset);
    its elements are the nearest E2M1 value with ties to the lower table index, not to even."""
    # the tie row: amax 7.75 -> scale 2^0, elements 0, 0.25, 0.5, 0.75, ... exactly
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize
    from gguf.quants import quantize as gguf_quantize

    x = (rng.standard_normal((64, 64)) * np.exp(rng.uniform(-8, 8, (64, 1)))).astype(np.float32)
    x[0, :32] = np.arange(32) * 0.25  # exact ties once scaled
    raw = gguf_quantize(x, gguf.GGMLQuantizationType.MXFP4).reshape(64, 2, 17)
    codes, scale = from_gguf_mxfp4_blocks(raw)
    ours = quantize(x, "mxfp4")
    assert np.array_equal(scale, np.asarray(ours.scale).view(np.uint8))
    differ = codes != ours.codes
    # random rows differ only in the sign of zero: a small negative value is as near +0 (index 0) as
    # -0 (index 8), and ggml's argmin keeps the lower index
    assert set(zip(codes[1:][differ[1:]].tolist(), ours.codes[1:][differ[1:]].tolist())) == {(0, 8)}
    assert (codes[0, 3], ours.codes[0, 3]) == (1, 2)  # the tie 0.75: ggml 0.5 (lower index), RNE 1.0
    assert np.array_equal(dequantize(raw.reshape(64, 34), gguf.GGMLQuantizationType.MXFP4), _mx_values(codes, scale))


def test_pack_orders_golden():
    """Byte layouts, by hand: codes 0..31 (element j = code j & 15)."""
    codes = np.arange(32, dtype=np.uint8) & 0x0F
    low_first = pack(codes, "float4_e2m1fn")
    assert low_first[:4].tolist() == [0x10, 0x32, 0x54, 0x76]  # byte i = code 2i | code 2i+1 << 4
    gg = pack(codes, "float4_e2m1fn", order="gguf")
    assert gg[:4].tolist() == [0x00, 0x11, 0x22, 0x33]  # byte j = code j | code j+16 << 4
    assert np.array_equal(unpack(gg, "float4_e2m1fn", order="gguf"), codes)


@given(st.integers(1, 4), st.integers(1, 3), st.randoms(use_true_random=False))
def test_pack_orders_round_trip(rows, blocks, rnd):
    codes = np.array([[rnd.randrange(16) for _ in range(32 * blocks)] for _ in range(rows)], np.uint8)
    for order in ("low-first", "gguf", "gpt-oss", "compressed-tensors"):
        assert np.array_equal(unpack(pack(codes, "float4_e2m1fn", order=order), "float4_e2m1fn", order=order), codes)
    scales = np.array([[rnd.randrange(256) for _ in range(blocks)] for _ in range(rows)], np.uint8)
    c2, s2 = from_gguf_mxfp4_blocks(gguf_mxfp4_blocks(codes, scales))
    assert np.array_equal(c2, codes) and np.array_equal(s2, scales)


def test_pack_order_errors():
    with pytest.raises(UnsupportedInputError, match="4-bit formats only"):
        pack(np.zeros(32, np.uint8), "float8_e4m3fn", order="gguf")
    with pytest.raises(ShapeError, match="multiple of 32"):
        pack(np.zeros(16, np.uint8), "float4_e2m1fn", order="gguf")
    with pytest.raises(ShapeError, match="17 bytes"):
        from_gguf_mxfp4_blocks(np.zeros((2, 16), np.uint8))
    with pytest.raises(ShapeError, match="does not match"):
        gguf_mxfp4_blocks(np.zeros((2, 32), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(UnknownNameError):
        pack(np.zeros(32, np.uint8), "float4_e2m1fn", order="high-first")
