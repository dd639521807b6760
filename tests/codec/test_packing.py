"""pack / unpack: round trips, golden bytes worked out by hand, torchao agreement, errors."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fp8port.codec.api import decode, encode
from fp8port.codec.packing import Packing, pack, unpack
from fp8port.errors import ShapeError, UnknownNameError, UnsupportedInputError

FP4 = ["float4_e2m1fn", "float4_e1m2"]
FP6 = ["float6_e2m3fn", "float6_e3m2fn"]
FP8 = ["float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu", "hifloat8", "int8"]
# (format, layout, codes per group, bytes per group)
PACKED = [(f, None, 2, 1) for f in FP4] + [(f, lay, 4, 3) for f in FP6 for lay in ("bitstream", "torchao")]


def codes_strategy(bits, group):
    """uint8 codes of `bits` bits, 1-D or 2-D, last dimension a multiple of `group` (0 allowed)."""
    flat = st.integers(0, 5).map(lambda k: (k * group,))
    rows = st.tuples(st.integers(1, 3), st.integers(0, 5)).map(lambda s: (s[0], s[1] * group))
    return (flat | rows).flatmap(lambda sh: hnp.arrays(np.uint8, sh, elements=st.integers(0, (1 << bits) - 1)))


# ---- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt,layout,group,nbytes", PACKED)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_codes(fmt, layout, group, nbytes, data):
    bits = 4 if fmt in FP4 else 6
    codes = data.draw(codes_strategy(bits, group))
    packed = pack(codes, fmt, layout=layout)
    assert packed.dtype == np.uint8
    assert packed.shape == (*codes.shape[:-1], codes.shape[-1] // group * nbytes)
    np.testing.assert_array_equal(unpack(packed, fmt, layout=layout), codes)


@pytest.mark.parametrize("fmt,layout,group,nbytes", PACKED)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_bytes(fmt, layout, group, nbytes, data):
    # Every byte pattern is a valid packing (no padding bits), so bytes -> codes -> bytes is exact too.
    rows = data.draw(st.integers(1, 3))
    packed = data.draw(hnp.arrays(np.uint8, (rows, nbytes * data.draw(st.integers(0, 6)))))
    np.testing.assert_array_equal(pack(unpack(packed, fmt, layout=layout), fmt, layout=layout), packed)


@pytest.mark.parametrize("fmt", FP8)
def test_eight_bit_is_a_copy(fmt):
    codes = np.arange(256, dtype=np.uint8).reshape(4, 64)
    packed = pack(codes, fmt)
    np.testing.assert_array_equal(packed, codes)
    assert not np.shares_memory(packed, codes)
    out = unpack(packed, fmt)
    np.testing.assert_array_equal(out, codes)
    assert not np.shares_memory(out, packed)


def test_round_trip_3d_and_non_contiguous():
    codes = np.random.default_rng(1).integers(0, 64, (3, 8, 12), dtype=np.uint8)
    view = codes.transpose(1, 0, 2)  # not contiguous
    for layout in Packing:
        packed = pack(view, "float6_e3m2fn", layout=layout)
        assert packed.shape == (8, 3, 9)
        np.testing.assert_array_equal(unpack(packed, "float6_e3m2fn", layout=layout), view)


# ---- golden bytes ----------------------------------------------------------------------


def test_fp4_golden_byte():
    # E2M1 1.0 is code 0x2 and 6.0 is 0x7. Element 0 goes to the LOW nibble (torchao
    # pack_uint4, DeepGEMM), so [1.0, 6.0] packs to 0x72, not 0x27.
    codes = encode(np.array([1.0, 6.0]), "float4_e2m1fn")
    np.testing.assert_array_equal(codes, [0x2, 0x7])
    assert pack(codes, "float4_e2m1fn").tolist() == [0x72]
    assert unpack(np.array([0x72], np.uint8), "float4_e2m1fn").tolist() == [0x2, 0x7]


def test_fp4_golden_two_rows():
    # Each row packs on its own: [0xF, 0x0, 0x1, 0x8] -> 0x0F, 0x81; [0x3, 0xC] -> 0xC3.
    codes = np.array([[0xF, 0x0, 0x1, 0x8], [0x3, 0xC, 0x0, 0x0]], np.uint8)
    assert pack(codes, "float4_e1m2").tolist() == [[0x0F, 0x81], [0xC3, 0x00]]


# E2M3 codes of [1.0, 7.5, -7.5, -4.5]:
#   1.0  = exp 01, man 000            -> 0b0_01_000 = 0x08
#   7.5  = max: exp 11, man 111       -> 0b0_11_111 = 0x1F
#   -7.5 = sign | 0x1F                -> 0x3F
#   -4.5 = -(1 + 1/8) * 2^(3-1): sign, exp 11, man 001 -> 0b1_11_001 = 0x39
FP6_CODES = [0x08, 0x1F, 0x3F, 0x39]
# bitstream: 24-bit word 0x08 | 0x1F << 6 | 0x3F << 12 | 0x39 << 18
#   = 0x000008 + 0x0007C0 + 0x03F000 + 0xE40000 = 0xE7F7C8, little-endian -> C8 F7 E7
FP6_BITSTREAM = [0xC8, 0xF7, 0xE7]
# torchao: u3 = 0x39 = 0b11_10_01, split low pair first:
#   p0 = 0x08 | 0b01 << 6 = 0x48;  p1 = 0x1F | 0b10 << 6 = 0x9F;  p2 = 0x3F | 0b11 << 6 = 0xFF
FP6_TORCHAO = [0x48, 0x9F, 0xFF]


def test_fp6_golden_codes_are_what_encode_gives():
    codes = encode(np.array([1.0, 7.5, -7.5, -4.5]), "float6_e2m3fn")
    assert codes.tolist() == FP6_CODES


@pytest.mark.parametrize("layout,expected", [("bitstream", FP6_BITSTREAM), ("torchao", FP6_TORCHAO)])
def test_fp6_golden_bytes(layout, expected):
    codes = np.array(FP6_CODES, np.uint8)
    assert pack(codes, "float6_e2m3fn", layout=layout).tolist() == expected
    assert unpack(np.array(expected, np.uint8), "float6_e2m3fn", layout=layout).tolist() == FP6_CODES
    np.testing.assert_array_equal(
        decode(unpack(np.array(expected, np.uint8), "float6_e2m3fn", layout=layout), "float6_e2m3fn"),
        np.array([1.0, 7.5, -7.5, -4.5], np.float32),
    )


def test_fp6_default_layout_is_bitstream():
    codes = np.array(FP6_CODES, np.uint8)
    assert pack(codes, "float6_e2m3fn").tolist() == FP6_BITSTREAM
    assert pack(codes, "float6_e2m3fn", layout=Packing.BITSTREAM).tolist() == FP6_BITSTREAM


def test_fp6_bitstream_matches_a_24_bit_word():
    # Independent statement of the bitstream layout: build the little-endian words with uint32.
    u = np.random.default_rng(2).integers(0, 64, (100, 4)).astype(np.uint32)
    words = u[:, 0] | u[:, 1] << 6 | u[:, 2] << 12 | u[:, 3] << 18
    expected = words.astype("<u4").view(np.uint8).reshape(100, 4)[:, :3].reshape(-1)
    assert pack(u.astype(np.uint8).reshape(-1), "float6_e3m2fn").tolist() == expected.tolist()


# ---- torchao and torch ----------------------------------------------------------------


def test_fp4_matches_torchao_pack_uint4():
    from torchao.prototype.mx_formats.kernels import pack_uint4, unpack_uint4

    codes = torch.from_numpy(np.random.default_rng(3).integers(0, 16, (64, 256), dtype=np.uint8))
    ours = pack(codes, "float4_e2m1fn")
    assert isinstance(ours, torch.Tensor) and ours.dtype == torch.uint8
    assert torch.equal(ours, pack_uint4(codes))
    assert torch.equal(unpack(pack_uint4(codes), "float4_e2m1fn"), unpack_uint4(ours))


def test_torch_in_torch_out():
    codes = torch.tensor([[0x08, 0x1F, 0x3F, 0x39]], dtype=torch.uint8)
    packed = pack(codes, "float6_e2m3fn", layout="torchao")
    assert isinstance(packed, torch.Tensor) and packed.tolist() == [FP6_TORCHAO]
    back = unpack(packed, "float6_e2m3fn", layout="torchao")
    assert isinstance(back, torch.Tensor) and torch.equal(back, codes)


def test_unpack_reads_torch_float4_x2_container():
    packed = torch.tensor([0x72, 0x0F], dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    assert unpack(packed, "float4_e2m1fn").tolist() == [0x2, 0x7, 0xF, 0x0]


def test_python_lists_are_accepted():
    assert pack([2, 7], "fp4").tolist() == [0x72]


# ---- errors -----------------------------------------------------------------------------


def test_fp4_odd_length_is_a_shape_error():
    with pytest.raises(ShapeError, match=r"multiple of 2, got 3"):
        pack(np.zeros((2, 3), np.uint8), "float4_e2m1fn")


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6])
def test_fp6_length_not_multiple_of_4(n):
    with pytest.raises(ShapeError, match=rf"multiple of 4, got {n}"):
        pack(np.zeros(n, np.uint8), "float6_e2m3fn")


def test_fp6_packed_length_not_multiple_of_3():
    with pytest.raises(ShapeError, match=r"multiple of 3, got 4"):
        unpack(np.zeros(4, np.uint8), "float6_e3m2fn")


def test_zero_dim_is_a_shape_error():
    with pytest.raises(ShapeError, match="0-d"):
        pack(np.uint8(3), "float4_e2m1fn")


@pytest.mark.parametrize("fmt,bad", [("float4_e2m1fn", 0x10), ("float6_e2m3fn", 0x40)])
def test_out_of_range_code_names_the_index(fmt, bad):
    codes = np.zeros((2, 8), np.uint8)
    codes[1, 5] = bad
    with pytest.raises(UnsupportedInputError, match=rf"found value 0x{bad:02x} at index \(1, 5\)"):
        pack(codes, fmt)


def test_wrong_dtype():
    with pytest.raises(UnsupportedInputError, match="int16"):
        pack(np.zeros(4, np.int16), "float4_e2m1fn")
    with pytest.raises(UnsupportedInputError, match="torch.float32"):
        pack(torch.zeros(4), "float4_e2m1fn")
    with pytest.raises(UnsupportedInputError, match="does not fit in a byte"):
        pack([1, 300], "float8_e4m3fn")


def test_unknown_layout_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="bitstream, torchao"):
        pack(np.zeros(4, np.uint8), "float6_e2m3fn", layout="ocp")


def test_layout_on_a_non_fp6_format():
    with pytest.raises(UnsupportedInputError, match="6-bit formats only"):
        pack(np.zeros(4, np.uint8), "float4_e2m1fn", layout="torchao")
