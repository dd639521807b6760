"""The API boundary: input kinds, names parsed once, clear typed errors."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch

import fp8port
from fp8port.errors import Fp8portError, ProfileError, UnknownNameError, UnsupportedInputError


def test_numpy_and_torch_inputs_agree_and_keep_their_kind():
    x = np.linspace(-500, 500, 1001, dtype=np.float32)
    want = fp8port.encode(x, "float8_e4m3fn")
    assert isinstance(want, np.ndarray) and want.dtype == np.uint8 and want.shape == x.shape
    for t in (torch.from_numpy(x), torch.from_numpy(x).double(), torch.from_numpy(x).bfloat16()):
        got = fp8port.encode(t, "float8_e4m3fn")
        assert isinstance(got, torch.Tensor) and got.dtype == torch.uint8
        ref = fp8port.encode(t.float().numpy(), "float8_e4m3fn")
        assert np.array_equal(got.numpy(), ref)
    assert np.array_equal(
        fp8port.encode(x.astype(ml_dtypes.bfloat16), "e4m3"),
        fp8port.encode(x.astype(ml_dtypes.bfloat16).astype(np.float32), "e4m3"),
    )
    dec = fp8port.decode(torch.from_numpy(want), "float8_e4m3fn")
    assert isinstance(dec, torch.Tensor) and dec.dtype == torch.float32
    # torch's own fp8 tensors are accepted as codes
    t8 = torch.from_numpy(x).to(torch.float8_e4m3fn)
    assert torch.equal(fp8port.decode(t8, "float8_e4m3fn"), t8.float())


def test_shapes_are_kept():
    x = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float16)
    assert fp8port.encode(x, "hifloat8").shape == (3, 4, 5)
    assert fp8port.decode(fp8port.encode(x, "hifloat8"), "hifloat8").shape == (3, 4, 5)


def test_aliases_parse_to_one_format():
    x = np.float32([1.0, 3.0])
    assert np.array_equal(fp8port.encode(x, "E4M3"), fp8port.encode(x, "float8_e4m3fn"))
    assert np.array_equal(fp8port.encode(x, "ue8m0"), fp8port.encode(x, "float8_e8m0fnu"))


@pytest.mark.parametrize(
    "kw,kind",
    [
        ({"fmt": "float9"}, "format"),
        ({"fmt": "e4m3", "rounding": "banker"}, "rounding"),
        ({"fmt": "e4m3", "overflow": "wrap"}, "overflow policy"),
        ({"fmt": "e4m3", "profile": "cuda"}, "profile"),
    ],
)
def test_unknown_names_list_valid_ones(kw, kind):
    with pytest.raises(UnknownNameError) as e:
        fp8port.encode(np.float32([1.0]), **kw)
    assert e.value.kind == kind and e.value.valid
    assert "valid:" in str(e.value)


def test_profile_that_lacks_a_format():
    with pytest.raises(ProfileError, match="torch.*float4_e2m1fn"):
        fp8port.encode(np.float32([1.0]), "float4_e2m1fn", profile="torch")


@pytest.mark.parametrize(
    "x", [np.array([1, 2], np.int32), np.array([True]), torch.tensor([1, 2]), np.array(["a"]), np.array([1 + 2j])]
)
def test_unsupported_inputs(x):
    with pytest.raises(UnsupportedInputError, match="not supported"):
        fp8port.encode(x, "e4m3")


def test_bad_codes():
    with pytest.raises(UnsupportedInputError, match=r"0x1f at index \(1,\)"):
        fp8port.decode(np.array([1, 0x1F], np.uint8), "float4_e2m1fn")
    with pytest.raises(UnsupportedInputError, match="1-byte"):
        fp8port.decode(np.array([1.0], np.float32), "e4m3")
    assert issubclass(UnsupportedInputError, Fp8portError)
