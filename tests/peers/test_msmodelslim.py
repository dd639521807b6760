"""msModelSlim 26.1.0 (Huawei's AscendV1 writer) against fp8port's msmodelslim-* presets and AscendV1 layout
(issue 24).

Its own code runs in its own venv (tests/peers/msmodelslim_side.py): the rules on every bf16 input, its weight
quantizers on conform cases, its CLI on SmolLM2 (one run with the seven types spread over the 30 layers, and one
run per type it writes without data on the first FP8PORT_MSMODELSLIM_LAYERS layers, 2 by default: set 30 for
the whole model), and its own dequantization of what it wrote. Everything compares bit for bit; the CLI runs
are kept in the model cache (FP8PORT_CACHE).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import fp8port
from fp8port.checkpoint import Checkpoint, Options
from fp8port.checkpoint import run as convert
from fp8port.checkpoint.diff import diff
from fp8port.checkpoint.inspect import inspect
from fp8port.checkpoint.layouts import ascend
from fp8port.checkpoint.layouts.ascend import AscendType, codec, entries
from fp8port.checkpoint.safetensors_io import Entry, write_file
from fp8port.conform import Outputs, block_cases, identify
from fp8port.quant import get_preset
from fp8port.quant.rules import ScaleRule
from tests.peers import venvs

pytestmark = pytest.mark.slow
SIDE = Path(__file__).with_name("msmodelslim_side.py")
F32 = np.float32

# Ascend type -> (activation, weight) of its `linear_quant` qconfig, and the fp8port preset of its weights
TYPES = {
    "W8A16": (None, ("per_channel", "int8"), "msmodelslim-int8"),
    "W8A8_DYNAMIC": (("per_token", "int8"), ("per_channel", "int8"), "msmodelslim-int8"),
    "W8A8_MXFP8": (("per_block", "mxfp8"), ("per_block", "mxfp8"), "msmodelslim-mxfp8"),
    "W4A4_MXFP4": (("per_block", "mxfp4"), ("per_block", "mxfp4"), "msmodelslim-mxfp4"),
    "W4A8_MXFP": (("per_block", "mxfp8"), ("per_block", "mxfp4"), "msmodelslim-mxfp4"),
    "W4A8_DYNAMIC": (("per_token", "int8"), ("per_channel", "int4"), "msmodelslim-int4"),
    "WFP8AFP8_DYNAMIC": (("per_token", "fp8_e4m3"), ("per_channel", "fp8_e4m3"), "msmodelslim-fp8"),
}
WRITTEN = [t for t in TYPES if t != "WFP8AFP8_DYNAMIC"]  # the types `--layout ascend` writes (not WFP8AFP8)
LAYERS = 30  # SmolLM2-135M; layer i gets type list(TYPES)[i % 7] in the mixed run
CUT = int(os.environ.get("FP8PORT_MSMODELSLIM_LAYERS", "2"))  # layers of SmolLM2 in the per-type runs
INT_STEP = {"msmodelslim-int8": 64, "msmodelslim-int4": 4}  # fp8port INT elements count in 2^-mbits


def _side(*args):
    venvs.run("msmodelslim", SIDE.read_text(), *map(str, args), timeout=3600)


def _config(includes: dict[str, list[str]], config_id: str = "fp8port-mixed") -> str:
    """Its modelslim_v1 config: one `linear_quant` block per type over `includes` (its include patterns)."""

    def q(role, cfg):
        return (
            (
                f"        {role}:\n          scope: {cfg[0]}\n          dtype: {cfg[1]}\n          symmetric: True\n"
                "          method: minmax\n"
            )
            if cfg
            else ""
        )

    procs = ""
    for atype, pats in includes.items():
        act, w, _ = TYPES[atype]
        layers = ", ".join(f'"{p}"' for p in pats)
        procs += f"    - type: linear_quant\n      qconfig:\n{q('act', act)}{q('weight', w)}      include: [{layers}]\n"
    return (
        f"apiversion: modelslim_v1\nmetadata:\n  config_id: {config_id}\n  score: 50\n  verified_model_types: []\n"
        "  label: {w_bit: 8, a_bit: 8, is_sparse: False, kv_cache: False}\n"
        f"spec:\n  process:\n{procs}  runner: model_wise\n  save:\n    - type: ascendv1_saver\n"
        "      part_file_size: 4\n"
    )


def _mixed() -> str:
    return _config({t: [f"model.layers.{i}.*" for i in range(j, LAYERS, len(TYPES))] for j, t in enumerate(TYPES)})


def _type_of(name: str) -> str:
    return list(TYPES)[int(name.split(".")[2]) % len(TYPES)]


@pytest.fixture(scope="session")
def msm(peer):
    return peer("msmodelslim")


@pytest.fixture(scope="session")
def smol():
    pytest.importorskip("transformers")
    from fp8port.models import smollm2

    return smollm2()


def _cached(name: str, cfgs: dict[str, str], make) -> Path:
    """A folder in the model cache (FP8PORT_CACHE) keyed by msModelSlim's configs, this side script and its
    requirements; `make(work)` fills it the first time."""
    from fp8port.models import cache_dir

    blob = json.dumps(cfgs, sort_keys=True) + SIDE.read_text() + " ".join(venvs.requirements("msmodelslim"))
    done = cache_dir() / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"
    if not (done / "complete").is_file():
        work = done.with_name(done.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        for stem, cfg in cfgs.items():
            (work / f"{stem}.yaml").write_text(cfg)
        make(work)
        (work / "complete").touch()
        shutil.rmtree(done, ignore_errors=True)
        work.rename(done)
    return done


@pytest.fixture(scope="session")
def run(msm, smol):
    """One msModelSlim CLI run on SmolLM2 (seven types over the layers) and its own dequantization."""

    def make(work):
        _side("quant", smol, work)
        _side("dequant", work / "out", work / "dequant.npz")

    tmp = _cached("msmodelslim-smollm2", {"out": _mixed()}, make)
    out = tmp / "out"
    return {
        "dir": out,
        "tensors": _entries(out),
        "src": _raw(Path(smol) / "model.safetensors"),
        "desc": json.loads((out / "quant_model_description.json").read_text()),
        "dequant": dict(np.load(tmp / "dequant.npz")),
    }


@pytest.fixture(scope="session")
def per_type(msm, smol):
    """msModelSlim's CLI once per type `--layout ascend` writes, on SmolLM2's first CUT layers (in `model`)."""
    cfgs = {t: _config({t: ["*"]}, f"fp8port-{t.lower()}") for t in WRITTEN}

    def make(work):
        _cut(Path(smol), work / "model", CUT)
        _side("quant", work / "model", work)

    return _cached(f"msmodelslim-per-type-{CUT}", cfgs, make)


def _cut(src: Path, dst: Path, layers: int) -> None:
    """SmolLM2 with its first `layers` decoder layers (config.json's num_hidden_layers to match)."""
    ck = Checkpoint.open(src)
    keep = [n for n in ck.tensors if not n.startswith("model.layers.") or int(n.split(".")[2]) < layers]
    dst.mkdir(parents=True)
    write_file(
        dst / "model.safetensors",
        [Entry(n, ck.info(n).dtype, tuple(ck.info(n).shape), lambda n=n: ck.read(n)) for n in keep],
        {"format": "pt"},
    )
    cfg = json.loads((src / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": layers}, indent=2))
    for f in ck.other_files():
        shutil.copyfile(f, dst / f.name)


def _tensors(path: Path) -> tuple[dict[str, tuple[str, tuple, bytes]], dict | None]:
    """A safetensors file's tensors as (dtype, shape, bytes), and its __metadata__."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    return {
        k: (v["dtype"], tuple(v["shape"]), raw[8 + n + v["data_offsets"][0] : 8 + n + v["data_offsets"][1]])
        for k, v in header.items()
    }, meta


def _raw(path: Path) -> dict[str, np.ndarray]:
    """safetensors tensors as NumPy, bf16 kept as ml_dtypes (bytes compare exactly)."""
    dt = {"BF16": ml_dtypes.bfloat16, "F32": np.float32}
    return {n: np.frombuffer(b, dt[d]).reshape(s) for n, (d, s, b) in _tensors(path)[0].items()}


def _entries(folder: Path) -> dict[str, tuple[str, tuple, bytes]]:
    """Every tensor of an AscendV1 folder as (dtype, shape, bytes); its files have no __metadata__."""
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        t, meta = _tensors(f)
        assert meta is None, f"{f} has __metadata__ {meta}"
        out.update(t)
    return out


def _reader(folder: Path):
    ck = Checkpoint.open(folder)
    return ck, ascend.Ascend().weights(ck)


# ---------------------------------------------------------------- the rules, on every bf16 input


@pytest.fixture(scope="session")
def rules_npz(msm, tmp_path_factory):
    out = tmp_path_factory.mktemp("msm-rules") / "rules.npz"
    _side("rules", out)
    return dict(np.load(out))


@pytest.mark.parametrize("tag", ["bf16", "f32"])
@pytest.mark.parametrize("kind", ["int8", "int4", "mxfp8", "mxfp4", "fp8"])
def test_scale_rules_on_every_bf16_amax(rules_npz, kind, tag):
    """Every positive bf16 amax (bf16 model), and 110k float32 ones (float32 model), give its scales."""
    amax, theirs = rules_npz[f"{tag}/amax"], rules_npz[f"{tag}/{kind}"]
    preset = f"msmodelslim-{kind}"
    scheme = get_preset(preset).weight
    if kind == "fp8" and tag == "f32":  # on a float32 model its FP8 rule is v3_float with a 1e-12 clamp
        scheme = scheme.with_(scale_rule="v3_float", amax_clamp=1e-12)
    rule = scheme.scale_rule if kind == "fp8" else ScaleRule.parse(scheme.scale_rule.value + "_f32" * (tag == "f32"))
    ours = rule.fn(amax, scheme.element, scheme)
    if kind.startswith("int") or kind == "fp8":
        want = (theirs * F32(INT_STEP.get(preset, 1))).astype(F32)
    else:  # exponents; above the E8M0 range msModelSlim gives NaN (a 0xFF byte)
        want = np.where(np.isnan(theirs), np.nan, np.ldexp(1.0, np.nan_to_num(theirs).astype(np.int64))).astype(F32)
    same = (ours.view(np.uint32) == want.view(np.uint32)) | (np.isnan(ours) & np.isnan(want))
    assert same.all(), (amax[~same][:5], ours[~same][:5], want[~same][:5])
    if kind == "mxfp8" and tag == "bf16":  # the bf16 log2 is why it is not OCP FLOOR (issue 24)
        floor = get_preset("mxfp8").weight
        assert (ScaleRule.FLOOR.fn(amax, floor.element, floor) != ours).sum() > 100


@pytest.mark.parametrize("fmt", ["float8_e4m3fn", "float4_e2m1fn"])
def test_mx_element_casts_on_every_bf16_value(rules_npz, fmt):
    """Every finite bf16 value at 14 block scales: profile `msmodelslim` after x / 2^e, where a zero
    quotient (MXFP8) or a zero input (MXFP4) gives +0."""
    x = rules_npz["x"]
    tag = "e4m3" if fmt == "float8_e4m3fn" else "e2m1"
    for e in (-127, -126, -100, -20, -9, -3, -1, 0, 1, 3, 8, 20, 100, 119):
        with np.errstate(all="ignore"):
            y = (x / np.ldexp(F32(1), e)).astype(F32)
        y = np.where((y if tag == "e4m3" else x) == 0, F32(0), y)
        ours = fp8port.encode(y, fmt, profile="msmodelslim")
        if tag == "e2m1":
            ours = fp8port.pack(ours[None, :], fmt)[0]
        theirs = rules_npz[f"{tag}/{e}"].reshape(-1)
        assert np.array_equal(ours, theirs), (e, np.flatnonzero(ours != theirs)[:5])


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_int_casts_on_every_bf16_value(rules_npz, fmt):
    """int_quantize: bf16(x / s) + 0, rounded half to even, clamped: Apply.BF16_DIVIDE then the codec."""
    x, step = rules_npz["x"], F32(2 ** get_preset(f"msmodelslim-{fmt}").weight.element.mbits)
    for s in (1.0, 2.0**-7, 0.013671875, 3.0e-5, 117.0):
        with np.errstate(all="ignore"):
            y = (x / F32(ml_dtypes.bfloat16(s))).astype(ml_dtypes.bfloat16).astype(F32) + F32(0)  # bf16 s
        ours = fp8port.encode((y / step).astype(F32), fmt, profile="msmodelslim").astype(np.int64)
        bits = int(fmt[3:])
        ours = np.where(ours >= 2 ** (bits - 1), ours - 2**bits, ours)  # two's complement codes -> integers
        assert np.array_equal(ours, rules_npz[f"{fmt}/{s!r}"].astype(np.int64)), s


# ---------------------------------------------------------------- SmolLM2 through its CLI: what fp8port writes


@pytest.mark.parametrize("atype", WRITTEN)
def test_convert_writes_its_files(per_type, atype, tmp_path):
    """`fp8port convert --layout ascend --preset TYPE` of the BF16 folder msModelSlim quantized gives its files:
    every tensor (name, dtype, shape, bytes; the tied lm_head clone), the description and index byte for byte,
    config.json and every copied file. Ours lacks its default_best_practice.yaml (the msModelSlim config it ran)
    and adds fp8port-summary.json."""
    theirs, ours = per_type / atype, tmp_path / atype
    convert(per_type / "model", ours, Options(mode="convert", layout="ascend", preset=atype), progress=None)
    t, o = _entries(theirs), _entries(ours)
    assert "lm_head.weight" in t and sorted(t) == sorted(o)
    differ = [n for n in t if t[n] != o[n]]
    assert not differ, (len(differ), differ[:3])
    files = {p.name for p in theirs.iterdir() if p.suffix != ".safetensors"} - {"default_best_practice.yaml"}
    assert files == {p.name for p in ours.iterdir() if p.suffix != ".safetensors"} - {"fp8port-summary.json"}
    for f in files:
        assert (theirs / f).read_bytes() == (ours / f).read_bytes(), f


def test_every_quantized_tensor_is_byte_identical(run):
    """Every SmolLM2 weight of the mixed run, quantized from the same BF16 values by the type's preset and laid
    out by the AscendV1 layout's own code, gives the bytes msModelSlim wrote: codes, scales, offsets, scale_bias."""
    t, desc, src = run["tensors"], run["desc"], run["src"]
    seen = {}
    for name, kind in desc.items():
        if not name.endswith(".weight") or kind == "FLOAT":
            continue
        assert kind == _type_of(name), name
        atype = AscendType.parse(kind)
        q = fp8port.quantize(src[name], TYPES[kind][2])
        for (n, d, shape), a in zip(entries(atype, name, q.shape), codec.arrays(atype, name, q)):
            assert t[n] == (d, tuple(shape), np.ascontiguousarray(a).tobytes()), n
        seen[kind] = seen.get(kind, 0) + 1
    assert seen == {k: 35 if i < 2 else 28 for i, k in enumerate(TYPES)}  # 7 projections x 5 or 4 layers


def test_float_tensors_copied_and_lm_head_cloned(run):
    t, desc, src = run["tensors"], run["desc"], run["src"]
    floats = [n for n, v in desc.items() if v == "FLOAT"]
    assert len(floats) == 30 * 2 + 3  # two norms per layer, embed_tokens, norm, lm_head
    for n in floats:
        want = src["model.embed_tokens.weight"] if n == "lm_head.weight" else src[n]
        assert t[n] == ("BF16", want.shape, want.tobytes()), n
    assert set(t) == {n for n, v in desc.items() if isinstance(v, str) and n not in ("version", "model_quant_type")}


def test_description_order_is_module_order(run):
    """Its 30-layer description lists tensors in the order fp8port's writer sorts them (rules.module_order)."""
    desc = run["desc"]
    assert list(desc)[-5:] == ["version", "model_quant_type", "metadata", "group_size", "optional"]
    assert (desc["version"], desc["model_quant_type"], desc["metadata"], desc["group_size"], desc["optional"]) == (
        "1.0.0",
        "W4A4_MXFP4",
        {},
        32,
        {},
    )
    names = list(desc)[:-5]
    assert names == sorted(names, key=ascend.module_order) and names != sorted(names)


# ---------------------------------------------------------------- reading what it wrote


def _bf16_if_mx(values: np.ndarray, kind: str) -> np.ndarray:
    """Its MX forward multiplies in bf16, its int and FP8 ones in float32."""
    return values.astype(ml_dtypes.bfloat16).astype(F32) if "MXFP" in kind else values.astype(F32)


def test_our_reader_equals_its_dequantization(run):
    """The AscendV1 layout reads every type of the mixed run (WFP8AFP8_DYNAMIC and W4A8_DYNAMIC included), and
    its values are msModelSlim's own dequantization bit for bit; inspect names each type."""
    ck, weights = _reader(run["dir"])
    assert len(weights) == len(run["dequant"]) == 210
    for name, theirs in run["dequant"].items():
        w = weights[name]
        assert w.label == run["desc"][name]
        ours = _bf16_if_mx(ascend.Ascend().values(ck, w), w.label)
        assert np.array_equal(ours.view(np.uint32), theirs.astype(F32).view(np.uint32)), name
    info = inspect(run["dir"])
    assert info["layout"] == "ascend" and info["quantized"] == 210
    assert info["ascend"]["weights_per_type"] == {"FLOAT": 63, **{k: 35 if i < 2 else 28 for i, k in enumerate(TYPES)}}


def test_dequant_diff_and_load_quantized(run, tmp_path):
    """`fp8port dequant` and diff read it exactly; load_quantized holds each weight as codes whose
    dequantization is its own, and gives the logits of the dequantized model."""
    import torch
    from transformers import AutoModelForCausalLM

    from fp8port.nn import FP8Linear, fused, load_quantized

    convert(run["dir"], tmp_path / "dense", Options(mode="dequant", dtype="fp32"), progress=None)
    assert diff(run["dir"], tmp_path / "dense")["identical"]  # every value, the lm_head clone's bytes too
    model = load_quantized(run["dir"], dtype=torch.float32)
    for name, theirs in run["dequant"].items():
        m = model.get_submodule(name[: -len(".weight")])
        assert isinstance(m, FP8Linear), name
        ours = _bf16_if_mx(m.dequantized_weight().numpy(), run["desc"][name])
        assert np.array_equal(ours.view(np.uint32), theirs.astype(F32).view(np.uint32)), name
    dense = AutoModelForCausalLM.from_pretrained(tmp_path / "dense", dtype=torch.float32)
    ids = torch.tensor([[1, 504, 3458, 314]])
    with torch.no_grad(), fused.disabled():  # 4 rows run the fused GEMV, equal within its stated bound only
        assert torch.equal(model(ids).logits, dense(ids).logits)


# ---------------------------------------------------------------- identify names its rules


def test_identify_names_its_rules_on_real_weights(run):
    """Rows of SmolLM2 weights with what msModelSlim made of them (read by the AscendV1 layout), as cases of our
    own: identify picks msModelSlim's bf16 rules (not OCP FLOOR) and its elements (ties away), no deviation."""
    src = run["src"]
    ck, weights = _reader(run["dir"])
    bundle = {}
    for kind, layer in (("W8A16", 0), ("W8A8_MXFP8", 2), ("W4A4_MXFP4", 3), ("W4A8_DYNAMIC", 5)):
        name = f"model.layers.{layer}.mlp.down_proj.weight"
        q = ascend.Ascend().read(ck, weights[name])
        w = src[name].astype(F32)
        preset = TYPES[kind][2]
        rows = _telling_rows(w, preset)
        case = f"block/{preset}/weight/{name}"
        bundle[case + "/inputs"] = w[rows]
        bundle[case + "/codes"] = np.asarray(q.codes)[rows]
        bundle[case + "/scales"] = np.asarray(q.scale).view(np.uint8)[rows] if "mx" in preset else q.scale_fp32[rows]
    rep = identify(Outputs.from_arrays(bundle))
    best = {g.group: g for g in rep.groups}
    for preset, rule in (
        ("msmodelslim-int8", "msmodelslim_int"),
        ("msmodelslim-mxfp8", "msmodelslim_mx"),
        ("msmodelslim-mxfp4", "msmodelslim_mxfp4"),
        ("msmodelslim-int4", "msmodelslim_int"),
    ):
        g = best[f"{preset}/weight"]
        assert g.best == rule and not g.deviations and g.versus_preset is None, g.summary


def _telling_rows(w: np.ndarray, preset: str, n: int = 6) -> list[int]:
    """Rows where msModelSlim's rule and the plain one (OCP FLOOR, EVEN, float32 division) part."""
    own = fp8port.quantize(w, preset)
    if preset == "msmodelslim-mxfp8":
        other = get_preset("mxfp8").weight
    elif preset == "msmodelslim-mxfp4":
        other = get_preset("mxfp4").weight.with_(scale_rule="even")
    else:
        other = get_preset(preset).weight.with_(apply="divide", scale_rule="msmodelslim_int_f32")
    alt = fp8port.quantize(w, other)
    differ = np.flatnonzero((np.asarray(own.codes) != np.asarray(alt.codes)).any(axis=1))
    return sorted(set(differ[:n].tolist()) | {0})


def test_identify_names_its_rules_on_conform_cases(msm, tmp_path):
    """Our golden block cases through msModelSlim's weight quantizers (float32 inputs: a float32 model):
    identify names the float32 twins of its rules and plain float32 division. No case of the catalogue
    parts MXFP4's bf16 and float32 twins (they differ only just below 1.75 * 2^k), so either may win
    there. NaN and Inf blocks stay unexplained: msModelSlim stores uint8(NaN + 127), an undefined byte."""
    presets = ["msmodelslim-int8", "msmodelslim-mxfp8", "msmodelslim-mxfp4"]
    np.savez(tmp_path / "inputs.npz", **{c.name: c.inputs for p in presets for c in block_cases(p)})
    _side("cases", tmp_path / "inputs.npz", tmp_path / "theirs.npz")
    rep = identify(Outputs.from_arrays(dict(np.load(tmp_path / "theirs.npz"))))
    g = {g.group: g for g in rep.groups}
    assert g["msmodelslim-int8/activation"].best.startswith("msmodelslim_int_f32 ["), g
    assert "elements scaled as x / s instead of bf16(x / s) + 0" in g["msmodelslim-int8/activation"].best
    assert not g["msmodelslim-int8/activation"].deviations
    assert g["msmodelslim-mxfp8/activation"].best.startswith("msmodelslim_mx_f32 ["), g
    assert g["msmodelslim-mxfp4/activation"].best.split(" ")[0] in ("msmodelslim_mxfp4", "msmodelslim_mxfp4_f32")
    for k in ("msmodelslim-mxfp8/activation", "msmodelslim-mxfp4/activation"):
        assert {d.scenario for d in g[k].deviations} <= {"nan_blocks", "inf_blocks"}, g[k].summary
