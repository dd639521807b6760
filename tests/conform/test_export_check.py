import json

import numpy as np
import pytest

from fp8port.conform import NothingToCheckError, Outputs, OutputsNotFoundError, Status, check, export, read_bundle
from fp8port.errors import ShapeError, UnknownNameError

from .conftest import np_save_dir


def test_export_is_deterministic(kit, tmp_path):
    export(tmp_path, formats=["float8_e4m3fn", "float8_e5m2", "float4_e2m1fn"], presets=["mxfp8", "deepseek-v3.1"])
    a = sorted(p.relative_to(kit) for p in kit.rglob("*") if p.is_file())
    b = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert a == b and len(a) > 10
    for rel in a:
        assert (kit / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_manifest_names_every_case_with_params_and_why(kit, inputs):
    m = json.loads((kit / "manifest.json").read_text())
    names = [c["name"] for c in m["cases"]]
    assert sorted(names) == sorted(inputs)
    by = {c["name"]: c for c in m["cases"]}
    z = by["block/deepseek-v3.1/activation/zero_blocks"]
    assert z["kind"] == "block" and "1e-4" in z["why"] and z["params"]["role"] == "activation"
    assert {
        "target": "deepseek-v3.1",
        "preset": "deepseek-v3.1",
        "role": "activation",
        "rule": "ue8m0",
        "scale_storage": "float32",
    } in z["expected"]
    t = by["element/float8_e4m3fn/ties"]
    assert {"target": "ml_dtypes@away", "profile": "ml_dtypes", "rounding": "away"} in t["expected"]
    assert all(c["why"] for c in m["cases"])


def test_inputs_cover_the_edges(inputs):
    codes = inputs["element/float8_e4m3fn/codes"]
    assert 448.0 in codes and np.isnan(inputs["element/float8_e4m3fn/specials"]).any()
    assert 464.0 in inputs["element/float8_e4m3fn/overflow"]  # the tie past max (D5)
    assert np.float32(np.uint32(0x3F600001).view(np.float32)) in inputs["block/deepseek-v3.1/activation/log2_near_ties"]
    assert inputs["block/deepseek-v3.1/activation/partial_blocks"].shape[-1] % 128 != 0


@pytest.mark.parametrize(
    "target", ["ml_dtypes", "torch", "ocp-mx@away", "mxfp8", "mxfp8@rceil", "deepseek-v3.1", "deepseek-v3.1@log2_ceil"]
)
@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_round_trip_has_zero_mismatches(kit, target, suffix):
    f = kit / "expected" / f"{target}{suffix}"
    rep = check(f, target)
    assert rep.ok and len(rep.compared) == sum(k.endswith("/codes") for k in read_bundle(f))
    assert not rep.unknown  # other formats of the profile were not exported: they are "missing"
    assert all(r.status is Status.OK for r in rep.compared)


def test_npy_tree_and_missing_cases(kit, tmp_path):
    arrays = read_bundle(kit / "expected" / "mxfp8@rceil.npz")
    keep = {k: v for k, v in arrays.items() if "/zero_blocks/" in k or "/random/" in k}
    np_save_dir(tmp_path, keep)
    rep = check(tmp_path, "mxfp8@rceil")
    assert len(rep.compared) == 2 and rep.ok
    assert "block/mxfp8/activation/nan_blocks" in {r.case for r in rep.missing}


def test_mismatch_report_names_coordinate_bytes_and_values(kit):
    arrays = read_bundle(kit / "expected" / "ml_dtypes.npz")
    rep = check(Outputs.from_arrays(arrays), "torch")  # torch saturates E4M3 overflow; ml_dtypes gives NaN
    bad = {r.case: r for r in rep.mismatched}
    r = bad["element/float8_e4m3fn/overflow"]
    m = r.first[0]
    assert m.array == "codes" and m.expected == "0x7e" and m.got == "0x7f"
    assert m.expected_value == 448.0 and np.isnan(m.got_value)
    assert "element/float8_e4m3fn/codes" not in bad


def test_zero_block_scale_against_deepseek_shows_both_bytes(kit):
    arrays = dict(read_bundle(kit / "expected" / "deepseek-v3.1.npz"))
    key = "block/deepseek-v3.1/activation/zero_blocks/scales"
    assert np.all(arrays[key] == np.float32(2.0**-22))
    arrays[key] = np.zeros(arrays[key].shape, np.uint8)  # torchao-style 0x00 bytes
    r = {r.case: r for r in check(Outputs.from_arrays(arrays), "deepseek-v3.1").mismatched}
    m = r["block/deepseek-v3.1/activation/zero_blocks"].first[0]
    assert (m.array, m.expected, m.got) == ("scales", "0x69", "0x00")


def test_user_errors_are_typed(kit, tmp_path):
    with pytest.raises(OutputsNotFoundError):
        check(tmp_path / "nope.npz", "mxfp8")
    with pytest.raises(UnknownNameError):
        check(kit / "expected" / "mxfp8.npz", "no-such-profile")
    with pytest.raises(UnknownNameError):
        check(kit / "expected" / "mxfp8.npz", "mxfp8@nvfp4")
    with pytest.raises(NothingToCheckError):
        check(kit / "expected" / "mxfp8.npz", "ml_dtypes")
    arrays = dict(read_bundle(kit / "expected" / "mxfp8.npz"))
    arrays["block/mxfp8/activation/random/codes"] = arrays["block/mxfp8/activation/random/codes"][:, :5]
    with pytest.raises(ShapeError, match="random"):
        check(Outputs.from_arrays(arrays), "mxfp8")
