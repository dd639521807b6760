import ml_dtypes
import numpy as np
import pytest
import torch

from fp8port.conform import Outputs, check, identify, read_bundle
from fp8port.conform.quirks import torchao_018
from fp8port.quant import get_preset, quantize
from fp8port.quant.scheme import Apply, ScaleRule

ELEM = ("float8_e4m3fn", "float8_e5m2", "float4_e2m1fn")


def groups(arrays):
    return {g.group: g for g in identify(Outputs.from_arrays(arrays)).groups}


def test_ml_dtypes_astype_is_named_ml_dtypes(inputs):
    out = {
        f"{k}/codes": x.astype(getattr(ml_dtypes, k.split("/")[1])).view(np.uint8)
        for k, x in inputs.items()
        if k.startswith("element/")
    }
    g = groups(out)
    for f in ELEM:
        assert "ml_dtypes" in g[f].best and not g[f].deviations, g[f].summary


def test_torch_to_is_named_torch_and_differs_from_ml_dtypes_on_e4m3_overflow(inputs):
    out = {
        f"{k}/codes": torch.from_numpy(x).to(getattr(torch, k.split("/")[1])).view(torch.uint8).numpy()
        for k, x in inputs.items()
        if k.startswith("element/float8")
    }
    g = groups(out)
    assert g["float8_e4m3fn"].best.startswith("torch") and not g["float8_e4m3fn"].deviations
    assert g["float8_e5m2"].best.startswith("torch")  # NaN is 0x7F, not ml_dtypes' 0x7E (D6)
    rep = check(Outputs.from_arrays(out), "ml_dtypes")
    bad = {r.case for r in rep.mismatched}
    assert {"element/float8_e4m3fn/overflow", "element/float8_e4m3fn/specials"} <= bad
    assert "element/float8_e4m3fn/ties" not in bad


def test_ml_dtypes_with_saturation_is_named_as_such(inputs):
    # a "broken" ml_dtypes-like cast that saturates E4M3 overflow (but not Inf)
    out = {}
    for k, x in inputs.items():
        if k.startswith("element/float8_e4m3fn/"):
            y = np.where(np.isfinite(x), np.clip(x, -448, 448), x)
            out[f"{k}/codes"] = y.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
    g = groups(out)["float8_e4m3fn"]
    assert "overflow=saturate" in g.best or "ocp-mx" in g.best, g.summary
    assert not g.deviations


def test_torchao_floor_is_floor_and_zero_blocks_differ_from_deepseek(inputs, to_mx):
    g = groups(to_mx(inputs, "block/mxfp8/", "FLOOR", 32))["mxfp8/activation"]
    assert g.best == "floor" and g.versus_preset is None  # a quirk variant explains cases, never wins
    dev = {d.scenario: d for d in g.deviations}
    # exactly the known torchao 0.18 quirks deviate, and each is named as one (D3, NaN blocks, D4b)
    assert set(dev) == {"inf_blocks", "nan_blocks", "subnormal_blocks"}, g.summary
    assert dev["inf_blocks"].first[0].got == "0xf7"
    assert dev["inf_blocks"].explanation.startswith("Inf block: scale from Inf's exponent bits (0xf7)")
    assert dev["nan_blocks"].explanation.startswith("NaN block: finite elements 0")
    assert dev["subnormal_blocks"].explanation == "scale 0x00 applied as 2^-126: codes halved (torchao 0.18, D4b)"
    ds = to_mx(inputs, "block/deepseek-v3.1/activation/", "FLOOR", 128)
    g = groups(ds)["deepseek-v3.1/activation"]
    assert g.best.startswith("floor") and "no 0.0001 clamp" in g.versus_preset
    rep = check(Outputs.from_arrays(ds), "deepseek-v3.1@floor")
    m = {r.case: r for r in rep.mismatched}["block/deepseek-v3.1/activation/zero_blocks"].first[0]
    assert (m.array, m.expected, m.got) == ("scales", "0x69", "0x00")


@pytest.mark.parametrize("mode", ["FLOOR", "CEIL", "EVEN", "RCEIL"])
def test_torchao_quirk_model_equals_to_mx(inputs, to_mx, mode):
    # the NumPy model of torchao 0.18 must give to_mx's bytes exactly, quirk scenarios included
    out = to_mx(inputs, "block/mxfp8/", mode, 32)
    scheme = get_preset("mxfp8").activation.with_(scale_rule=mode.lower())
    names = {k.rsplit("/", 1)[0] for k in out}
    assert {f"block/mxfp8/activation/{s}" for s in ("inf_blocks", "nan_blocks", "subnormal_blocks")} <= names
    for name in names:
        e, _ = torchao_018(inputs[name], scheme)
        np.testing.assert_array_equal(e.codes, out[f"{name}/codes"], err_msg=name)
        np.testing.assert_array_equal(e.scales, out[f"{name}/scales"], err_msg=name)


@pytest.mark.parametrize("mode", ["CEIL", "EVEN"])
def test_torchao_ceil_and_even_deviate_only_by_explained_quirks(inputs, to_mx, mode):
    g = groups(to_mx(inputs, "block/mxfp8/", mode, 32))["mxfp8/activation"]
    assert g.best.startswith(mode.lower()), g.summary
    assert g.deviations and all("torchao 0.18" in d.explanation for d in g.deviations), g.summary


def test_torchao_rceil_is_float_log2_and_deviates_at_near_ties(inputs, to_mx):
    out = to_mx(inputs, "block/mxfp8/", "RCEIL", 32)
    g = groups(out)["mxfp8/activation"]
    assert g.best.startswith("log2_ceil"), g.summary
    rep = check(Outputs.from_arrays(out), "mxfp8@rceil")
    bad = {r.case.split("/")[-1] for r in rep.mismatched}
    assert "log2_near_ties" in bad and "random" not in bad and "above_max" not in bad
    # every deviation from log2_ceil is explained: the three by torchao 0.18 RCEIL quirks, zero blocks
    # (log2(0) clamped to 0x00, where fp8port's log2_ceil gives IEEE's s = 0) by the plain floor rule
    dev = {d.scenario: d.explanation for d in g.deviations}
    assert set(dev) == {"inf_blocks", "nan_blocks", "subnormal_blocks", "zero_blocks"}, g.summary
    assert all(dev.values()), g.summary
    assert (
        dev["inf_blocks"]
        == "Inf block: scale 0xfe (2^127) instead of NaN, Inf clipped to +-448 (torchao 0.18 RCEIL, D3)"
    )
    assert dev["nan_blocks"] == "NaN block: every element +NaN, finite and -NaN ones included (torchao 0.18 RCEIL)"
    assert dev["subnormal_blocks"] == (
        "scale 0x00 applied with reciprocal 1.0 (not 2^127): elements flushed to +-0 (torchao 0.18 RCEIL, D4b)"
    )
    assert dev["zero_blocks"].startswith("scale rule floor")


def test_broken_deepseek_without_clamp_is_named(inputs):
    s = get_preset("deepseek-v3.1").activation.with_(amax_clamp=None)
    out = {}
    for k, x in inputs.items():
        if k.startswith("block/deepseek-v3.1/activation/"):
            q = quantize(x, s, nonfinite="propagate")
            out[f"{k}/codes"], out[f"{k}/scales"] = q.codes, q.scale
    g = groups(out)["deepseek-v3.1/activation"]
    assert g.best.startswith("ue8m0") and "no 0.0001 clamp" in g.versus_preset and not g.deviations


def test_broken_float_log2_instead_of_bitwise_is_named(kit):
    # a DeepSeek UE8M0 kernel written with a float32 log2 ceil (DeepSeek-V3 kernel.py) instead of the bits
    broken = read_bundle(kit / "expected" / "deepseek-v3.1@log2_ceil.npz")
    g = groups(broken)["deepseek-v3.1/activation"]
    assert g.best.startswith("log2_ceil") and not g.deviations
    assert "float32 log2" in g.versus_preset and "instead of ue8m0" in g.versus_preset
    assert "ue8m0" in g.runner_up or "log2_ceil" in g.runner_up
    rep = check(Outputs.from_arrays(broken), "deepseek-v3.1")
    assert "block/deepseek-v3.1/activation/log2_near_ties" in {r.case for r in rep.mismatched}


def test_cases_of_your_own_are_scored_when_their_inputs_come_along():
    # blocks whose amax sits just under 2^8 (255, 254) and a tie (1.0625 at scale 1): msModelSlim's MXFP8
    # (bf16 log2, ties away) and OCP's (FLOOR, RNE) part on them; identify names whichever made the bytes
    x = np.zeros((4, 32), np.float32)
    x[0, :2], x[1, :2], x[2, :2], x[3, :2] = (255, 3), (254, -7), (448, 1.0625), (-448, -1.0625)
    for made_by, best in (("msmodelslim-mxfp8", "msmodelslim_mx"), ("mxfp8", "floor")):
        q = quantize(x, made_by)
        key = "block/msmodelslim-mxfp8/weight/mine"
        arrays = {
            f"{key}/inputs": x,
            f"{key}/codes": q.codes,
            f"{key}/scales": q.scale.view(np.uint8),
            "block/msmodelslim-mxfp8/weight/no-inputs/codes": q.codes,
        }
        rep = identify(Outputs.from_arrays(arrays))
        (g,) = rep.groups
        assert g.best.split(" ")[0] == best and not g.deviations, g.summary
        assert rep.unknown == ("block/msmodelslim-mxfp8/weight/no-inputs",)
    assert "elements: ties round to nearest even" in g.best  # the OCP bytes, in words


def test_every_scale_rule_and_apply_mode_has_words():
    # identify explains a difference in words: a new ScaleRule or Apply member without them is a KeyError there
    from fp8port.conform.identify import APPLY_WORDS, RULE_WORDS

    assert set(APPLY_WORDS) == set(Apply)
    assert set(RULE_WORDS) == set(ScaleRule)
