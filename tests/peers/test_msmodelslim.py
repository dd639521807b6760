"""msModelSlim 26.1.0 (Huawei's AscendV1 writer) against fp8port's msmodelslim-* presets (issue 24).

Its own code runs in its own venv (tests/peers/msmodelslim_side.py): the rules on every bf16 input,
its weight quantizers on conform cases, its CLI on SmolLM2 (one run, seven types spread over the
30 layers), and its own dequantization of what it wrote. Everything compares bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import fp8port
from fp8port.conform import Outputs, block_cases, identify
from fp8port.quant import QuantizedTensor, Role, get_preset
from fp8port.quant.rules import ScaleRule
from fp8port.quant.tensor import Framework
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
LAYERS = 30  # SmolLM2-135M; layer i gets type list(TYPES)[i % 7]
INT_STEP = {"msmodelslim-int8": 64, "msmodelslim-int4": 4}  # fp8port INT elements count in 2^-mbits


def _side(*args):
    venvs.run("msmodelslim", SIDE.read_text(), *map(str, args), timeout=1200)


def _config() -> str:
    def q(role, cfg):
        return (f"        {role}:\n          scope: {cfg[0]}\n          dtype: {cfg[1]}\n          symmetric: True\n"
                "          method: minmax\n") if cfg else ""

    procs = ""
    for j, (act, w, _) in enumerate(TYPES.values()):
        layers = ", ".join(f'"model.layers.{i}.*"' for i in range(j, LAYERS, len(TYPES)))
        procs += f"    - type: linear_quant\n      qconfig:\n{q('act', act)}{q('weight', w)}      include: [{layers}]\n"
    return ("apiversion: modelslim_v1\nmetadata:\n  config_id: fp8port-mixed\n  score: 50\n  verified_model_types: []\n"
            "  label: {w_bit: 8, a_bit: 8, is_sparse: False, kv_cache: False}\n"
            f"spec:\n  process:\n{procs}  runner: model_wise\n  save:\n    - type: ascendv1_saver\n"
            "      part_file_size: 4\n")


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


@pytest.fixture(scope="session")
def run(msm, smol):
    """One msModelSlim CLI run on SmolLM2 (seven types over the layers), its tensors and its own dequant;
    kept in the model cache (FP8PORT_CACHE), keyed by the config and the peer's requirements."""
    from fp8port.models import cache_dir

    cfg = _config()
    key = hashlib.sha256((cfg + SIDE.read_text() + " ".join(venvs.requirements("msmodelslim"))).encode()).hexdigest()
    tmp = cache_dir() / f"msmodelslim-smollm2-{key[:12]}"
    out = tmp / "out"
    if not (tmp / "dequant.npz").is_file():
        work = tmp.with_name(tmp.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        (work / "cfg.yaml").write_text(cfg)
        cmd = [str(msm.with_name("msmodelslim")), "quant", "--model_type", "default", "--model_path", str(smol),
               "--save_path", str(work / "out"), "--device", "cpu", "--config_path", str(work / "cfg.yaml"),
               "--trust_remote_code", "False"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.pop("PYTHONPATH", None)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        _side("dequant", work / "out", work / "dequant.npz")
        shutil.rmtree(tmp, ignore_errors=True)
        work.rename(tmp)
    tensors = {}
    for f in out.glob("*.safetensors"):
        tensors.update(_raw(f))
    return {"dir": out, "tensors": tensors, "src": _raw(Path(smol) / "model.safetensors"),
            "desc": json.loads((out / "quant_model_description.json").read_text()),
            "dequant": dict(np.load(tmp / "dequant.npz"))}


def _raw(path: Path) -> dict[str, np.ndarray]:
    """safetensors tensors as NumPy, bf16 / fp8 kept as ml_dtypes (bytes compare exactly)."""
    from safetensors import safe_open

    dt = {"BF16": ml_dtypes.bfloat16, "F8_E4M3": ml_dtypes.float8_e4m3fn, "F32": np.float32, "I8": np.int8,
          "U8": np.uint8}
    out = {}
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
        data = fh.read()
    for k, v in header.items():
        if k != "__metadata__":
            a, b = v["data_offsets"]
            out[k] = np.frombuffer(data[a:b], dt[v["dtype"]]).reshape(v["shape"])
    return out


# ---------------------------------------------------------------- what the AscendV1 files hold

def ascend_tensors(q: QuantizedTensor, atype: str, name: str) -> dict[str, np.ndarray]:
    """The tensors msModelSlim's AscendV1Saver writes for weight `name`, from our QuantizedTensor."""
    base = name[: -len(".weight")]
    codes, s = np.asarray(q.codes), np.asarray(q.scale_fp32, F32)
    preset = TYPES[atype][2]
    if preset in INT_STEP:
        ws = (s / F32(INT_STEP[preset])).astype(F32)
        out = {f"{base}.weight_scale": ws, f"{base}.weight_offset": np.zeros_like(ws)}
        if atype == "W4A8_DYNAMIC":  # int4 pairs along N: rows 2i (low nibble) and 2i+1 (high) in one int8
            out[name] = fp8port.pack(np.ascontiguousarray(codes.T), "int4").T.view(np.int8)
            q_int = np.where(codes > 7, codes.astype(np.int64) - 16, codes)
            deq = q_int * ws.astype(np.float64)  # exact: a bf16 scale times a small integer sum
            tp = 1 if any(p in name for p in ("up_proj", "gate_proj", "q_proj", "k_proj", "v_proj")) else 16
            out[f"{base}.scale_bias"] = (8 * deq.reshape(deq.shape[0], tp, -1).sum(-1)).astype(F32)
        else:
            out[name] = codes.view(np.int8)
        return out
    if preset == "msmodelslim-fp8":
        ws = s.astype(F32)
        return {name: codes.view(ml_dtypes.float8_e4m3fn), f"{base}.weight_scale": ws,
                f"{base}.weight_offset": np.zeros_like(ws)}
    scale = np.asarray(q.scale).view(np.uint8)
    if preset == "msmodelslim-mxfp8":
        return {name: codes.view(ml_dtypes.float8_e4m3fn), f"{base}.weight_scale": scale}
    return {name: fp8port.pack(codes, "float4_e2m1fn"), f"{base}.weight_scale": scale}


def read_back(t: dict, atype: str, name: str) -> QuantizedTensor:
    """Our reader formula: msModelSlim's tensors as a QuantizedTensor of the type's preset."""
    base = name[: -len(".weight")]
    preset = TYPES[atype][2]
    scheme = get_preset(preset).weight
    w, ws = t[name], t[f"{base}.weight_scale"]
    if preset in INT_STEP:
        if atype == "W4A8_DYNAMIC":
            b = w.view(np.uint8)
            codes = np.stack([b & 15, b >> 4], 1).reshape(-1, w.shape[1])
        else:
            codes = w.view(np.uint8)
        assert not t[f"{base}.weight_offset"].any()
        s = (ws * F32(INT_STEP[preset])).astype(F32)
        stored = s
    elif preset == "msmodelslim-fp8":
        codes, s, stored = w.view(np.uint8), ws.astype(F32), ws.astype(F32)
    else:
        codes = w.view(np.uint8)
        if preset == "msmodelslim-mxfp4":
            codes = fp8port.unpack(codes, "float4_e2m1fn")
        stored = ws.view(ml_dtypes.float8_e8m0fnu)
        s = np.ldexp(np.ones(ws.shape), ws.astype(np.int64) - 127).astype(F32)
    return QuantizedTensor(codes=np.ascontiguousarray(codes), scale=stored, scale_fp32=s, shape=codes.shape,
                           scheme=scheme, role=Role.WEIGHT, src_dtype="bfloat16", framework=Framework.NUMPY)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


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
    for s in (1.0, 2.0 ** -7, 0.013671875, 3.0e-5, 117.0):
        with np.errstate(all="ignore"):
            y = (x / F32(ml_dtypes.bfloat16(s))).astype(ml_dtypes.bfloat16).astype(F32) + F32(0)  # bf16 s
        ours = fp8port.encode((y / step).astype(F32), fmt, profile="msmodelslim").astype(np.int64)
        bits = int(fmt[3:])
        ours = np.where(ours >= 2 ** (bits - 1), ours - 2**bits, ours)  # two's complement codes -> integers
        assert np.array_equal(ours, rules_npz[f"{fmt}/{s!r}"].astype(np.int64)), s


# ---------------------------------------------------------------- SmolLM2 through its CLI

def test_every_quantized_tensor_is_byte_identical(run):
    """Every SmolLM2 weight, quantized from the same BF16 values by the type's preset, gives the bytes
    msModelSlim wrote: codes, scales, offsets (and W4A8_DYNAMIC's scale_bias)."""
    t, desc, src = run["tensors"], run["desc"], run["src"]
    seen = {}
    for name, kind in desc.items():
        if not name.endswith(".weight") or kind == "FLOAT":
            continue
        assert kind == _type_of(name), name
        q = fp8port.quantize(src[name], TYPES[kind][2])
        for k, want in ascend_tensors(q, kind, name).items():
            assert _same(want, t[k]), (k, want.dtype, t[k].dtype, want.shape, t[k].shape)
        seen[kind] = seen.get(kind, 0) + 1
    assert seen == {k: 35 if i < 2 else 28 for i, k in enumerate(TYPES)}  # 7 projections x 5 or 4 layers


def test_float_tensors_copied_and_lm_head_cloned(run):
    t, desc, src = run["tensors"], run["desc"], run["src"]
    floats = [n for n, v in desc.items() if v == "FLOAT"]
    assert len(floats) == 30 * 2 + 3  # two norms per layer, embed_tokens, norm, lm_head
    for n in floats:
        want = src["model.embed_tokens.weight"] if n == "lm_head.weight" else src[n]
        assert _same(want, t[n]), n
    assert set(t) == {n for n, v in desc.items() if isinstance(v, str) and n not in (
        "version", "model_quant_type")}


def test_description_file(run):
    desc = run["desc"]
    assert list(desc)[-5:] == ["version", "model_quant_type", "metadata", "group_size", "optional"]
    assert (desc["version"], desc["model_quant_type"], desc["metadata"], desc["group_size"], desc["optional"]) == (
        "1.0.0", "W4A4_MXFP4", {}, 32, {})
    first = list(desc)[:4]  # per layer, in module order: q_proj's tensors first
    assert first[0] == "model.layers.0.self_attn.q_proj.weight"


def test_our_dequantization_equals_its_own(run):
    """fp8port.dequantize of msModelSlim's tensors (read as QuantizedTensors) equals its own dequantization."""
    t, desc = run["tensors"], run["desc"]
    n = 0
    for name, theirs in run["dequant"].items():
        kind = desc[name]
        q = read_back(t, kind, name)
        dtype = "bfloat16" if "MXFP" in kind else "float32"  # its MX forward multiplies in bf16, int in float32
        ours = fp8port.dequantize(q, dtype).astype(F32)
        assert np.array_equal(ours.view(np.uint32), theirs.astype(F32).view(np.uint32)), name
        n += 1
    assert n == 210


# ---------------------------------------------------------------- identify names its rules

def test_identify_names_its_rules_on_real_weights(run):
    """Rows of SmolLM2 weights with what msModelSlim made of them, as cases of our own: identify picks
    msModelSlim's bf16 rules (not OCP FLOOR) and its elements (ties away), with no deviation."""
    t, src = run["tensors"], run["src"]
    bundle = {}
    for kind, layer in (("W8A16", 0), ("W8A8_MXFP8", 2), ("W4A4_MXFP4", 3), ("W4A8_DYNAMIC", 5)):
        name = f"model.layers.{layer}.mlp.down_proj.weight"
        q = read_back(t, kind, name)
        w = src[name].astype(F32)
        preset = TYPES[kind][2]
        rows = _telling_rows(w, preset)
        case = f"block/{preset}/weight/{name}"
        bundle[case + "/inputs"] = w[rows]
        bundle[case + "/codes"] = np.asarray(q.codes)[rows]
        bundle[case + "/scales"] = np.asarray(q.scale).view(np.uint8)[rows] if "mx" in preset else q.scale_fp32[rows]
    rep = identify(Outputs.from_arrays(bundle))
    best = {g.group: g for g in rep.groups}
    for preset, rule, prof in (("msmodelslim-int8", "msmodelslim_int", None),
                               ("msmodelslim-mxfp8", "msmodelslim_mx", None),
                               ("msmodelslim-mxfp4", "msmodelslim_mxfp4", None),
                               ("msmodelslim-int4", "msmodelslim_int", None)):
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
