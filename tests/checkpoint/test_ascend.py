"""AscendV1 (msModelSlim) writer and reader, checked against the loaders' contract as data
(tests/golden/ascend_contract.json, transcribed from shared/research/ascend-layout.md §1-§3)."""

import json
import math
import re
from fnmatch import fnmatchcase
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import fp8port
from fp8port.checkpoint import Checkpoint, Options, run
from fp8port.checkpoint.diff import diff
from fp8port.checkpoint.inspect import inspect
from fp8port.checkpoint.layouts import ascend
from fp8port.checkpoint.staging import staging_dir
from fp8port.errors import ConversionError, Fp8portError, NonFiniteError, UnknownNameError
from fp8port.quant import get_preset

from .conftest import BF16, write_dense

CONTRACT = json.loads((Path(__file__).parents[1] / "golden" / "ascend_contract.json").read_text())
TYPES = list(CONTRACT["types"])
LAYERS = (0, 3, 61)  # dense MLP, MoE, MTP (num_hidden_layers = 61)


def deepseek_like(rng) -> dict[str, np.ndarray]:
    """DeepSeek-V3 names with widths that are multiples of neither 32 nor 128 (K even for FP4)."""
    h, q_lora, kv_lora, rope, heads, nope, v, inter, moe, vocab = 200, 88, 70, 12, 3, 34, 50, 330, 74, 90
    t = {"model.embed_tokens.weight": rng.standard_normal((vocab, h))}
    for i in LAYERS:
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = rng.standard_normal(h)
        t[p + "self_attn.q_a_proj.weight"] = rng.standard_normal((q_lora, h))
        t[p + "self_attn.q_a_layernorm.weight"] = rng.standard_normal(q_lora)
        t[p + "self_attn.q_b_proj.weight"] = rng.standard_normal((heads * (nope + rope), q_lora))
        t[p + "self_attn.kv_a_proj_with_mqa.weight"] = rng.standard_normal((kv_lora + rope, h))
        t[p + "self_attn.kv_a_layernorm.weight"] = rng.standard_normal(kv_lora)
        t[p + "self_attn.kv_b_proj.weight"] = rng.standard_normal((heads * (nope + v), kv_lora))
        t[p + "self_attn.o_proj.weight"] = rng.standard_normal((h, heads * v))
        t[p + "post_attention_layernorm.weight"] = rng.standard_normal(h)
        if i == 0:
            mlps = [p + "mlp."]
            width = inter
        else:
            t[p + "mlp.gate.weight"] = rng.standard_normal((3, h))
            t[p + "mlp.gate.e_score_correction_bias"] = rng.standard_normal(3)
            mlps = [p + f"mlp.experts.{e}." for e in range(3)] + [p + "mlp.shared_experts."]
            width = moe
        for m in mlps:
            t[m + "gate_proj.weight"] = rng.standard_normal((width, h)) * np.exp(rng.standard_normal((width, 1)))
            t[m + "up_proj.weight"] = rng.standard_normal((width, h))
            t[m + "down_proj.weight"] = rng.standard_normal((h, width))
    mtp = "model.layers.61."
    t[mtp + "enorm.weight"] = rng.standard_normal(h)
    t[mtp + "hnorm.weight"] = rng.standard_normal(h)
    t[mtp + "eh_proj.weight"] = rng.standard_normal((h, 2 * h))
    t[mtp + "shared_head.norm.weight"] = rng.standard_normal(h)
    t[mtp + "shared_head.head.weight"] = rng.standard_normal((vocab, h))
    t["model.norm.weight"] = rng.standard_normal(h)
    t["lm_head.weight"] = rng.standard_normal((vocab, h))
    return {k: (v * 0.05).astype(BF16) for k, v in t.items()}


CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "hidden_size": 200,
    "num_hidden_layers": 61,
    "num_nextn_predict_layers": 1,
    "torch_dtype": "bfloat16",
    "text_config": {"quantization_config": {"quant_method": "fp8"}},
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    src = write_dense(root / "bf16", deepseek_like(np.random.default_rng(1)), shards=2, config=CONFIG)
    run(src, root / "v31", Options(mode="convert", preset="deepseek-v3.1"), progress=None)
    run(src, root / "v3", Options(mode="convert", preset="deepseek-v3"), progress=None)
    return root


def activation_scales(src: Path, path: Path) -> Path:
    mods = {
        n[: -len(".weight")]: {"input_scale": 0.01 + 1e-4 * i, "input_offset": (i % 7) - 3}
        for i, n in enumerate(Checkpoint.open(src).tensors)
        if n.endswith(".weight")
    }
    path.write_text(json.dumps(mods))
    return path


def convert(src, dst, atype, **kw) -> dict:
    return run(
        src, dst, Options(mode="convert", layout="ascend", preset=atype, **kw), progress=None, verify=True
    ).summary


# ---- the contract, checked file by file ---------------------------------------------------------


def _shape(expr, n, k, name):
    if isinstance(expr, int):
        return expr
    if expr == "S":  # W4A8_DYNAMIC's scale_bias slices, by module name
        return next(
            int(s)
            for s, mods in CONTRACT["types"]["W4A8_DYNAMIC"]["scale_bias_slices"].items()
            if any(m in name for m in mods)
        )
    return {"N": n, "K": k, "N/2": n // 2, "K/2": k // 2, "ceil(K/32)": math.ceil(k / 32)}[expr]


def _bf16_exact(a: np.ndarray) -> bool:
    return np.array_equal(a.astype(ml_dtypes.bfloat16).astype(np.float32), a)


def check_contract(dst: Path, src: Path, fp16: bool = False) -> dict:
    """Every rule of the contract that a written folder can break; returns the description."""
    files, dc = CONTRACT["files"], CONTRACT["description"]
    names = sorted(p.name for p in dst.glob("*.safetensors"))
    count = len(names)  # numbered and indexed also when there is one shard, as msModelSlim writes
    assert names == [files["shard"].format(i=i + 1, n=count) for i in range(count)]
    index = json.loads((dst / files["index"]).read_text())
    assert sorted(index) == files["index_keys"] and list(index["metadata"]) == files["index_metadata_keys"]
    assert set(index["weight_map"].values()) == set(names)
    config = json.loads((dst / "config.json").read_text())
    assert "quantization_config" not in config and "quantization_config" not in config.get("text_config", {})
    assert (dst / "tokenizer.json").read_bytes() == (src / "tokenizer.json").read_bytes()

    desc = json.loads((dst / files["description"]).read_text())
    ckpt = Checkpoint.open(dst)
    pytypes = {"str": str, "int": int, "object": dict}
    for key, kind in dc["global_keys"].items():
        assert isinstance(desc[key], pytypes[kind]), key
    assert desc["version"] == dc["version"]
    entries = {k: v for k, v in desc.items() if k not in dc["global_keys"]}
    assert set(entries) == set(ckpt.tensors)  # every tensor, and nothing else
    present = set(entries.values())
    ranked = present & set(dc["priority_low_to_high"])  # W4A8_DYNAMIC is not in msModelSlim's list
    assert desc["model_quant_type"] == max(ranked, key=dc["priority_low_to_high"].index)
    assert not present & set(dc["never_written"])
    mx = any(CONTRACT["types"].get(t, {}).get("mx") for t in present)
    assert desc["group_size"] == (dc["group_size_mx"] if mx else dc["group_size_other"])

    fr = CONTRACT["float_rules"]
    n_layers, n_mtp = config["num_hidden_layers"], config.get("num_nextn_predict_layers", 0)
    mtp_prefixes = tuple(f"model.layers.{i}." for i in range(n_layers, n_layers + n_mtp))
    for name, t in entries.items():
        if any(fnmatchcase(name, p) for p in fr["patterns"]) or name.startswith(mtp_prefixes):
            assert t == "FLOAT", name
    groups: dict[str, set] = {}
    for name, t in entries.items():
        m = re.match(r"(.*)\.(q_proj|k_proj|v_proj|gate_proj|up_proj|q_a_proj|kv_a_proj_with_mqa)\.weight$", name)
        if m:
            parent = re.sub(r"\.experts\.\d+$", ".experts", m.group(1))
            key = next(i for i, g in enumerate(fr["same_type_groups"]) if m.group(2) in g)
            groups.setdefault(f"{parent}/{key if '.experts' not in parent else 'e'}", set()).add(t)
    assert groups and all(len(v) == 1 for v in groups.values()), groups

    for name, t in entries.items():
        if t == "FLOAT" or not name.endswith(".weight"):
            continue
        spec = CONTRACT["types"][t]
        base = name[: -len(".weight")]
        n, k = Checkpoint.open(src).info(name).shape  # the source's logical shape
        own = {x for x in entries if x.startswith(base + ".") and x[len(base) + 1 :] in spec["tensors"]}
        assert own == {f"{base}.{p}" for p in spec["tensors"]}, name
        for part, want in spec["tensors"].items():
            full = f"{base}.{part}"
            info = ckpt.info(full)
            dtype = want.get("dtype_fp16_model", want["dtype"]) if fp16 else want["dtype"]
            assert info.dtype == dtype, full
            assert list(info.shape) == [_shape(e, n, k, name) for e in want["shape"]], full
            assert entries[full] == t
        for bad in spec.get("forbidden_scale_bytes", []):
            assert not (ckpt.read(base + ".weight_scale") == bad).any()
        if t == "W8A8_DYNAMIC":
            assert _bf16_exact(ckpt.read(base + ".weight_scale"))
            assert not ckpt.read(base + ".weight_offset").any()
        if t == "W8A8":
            assert float(ckpt.read(base + ".input_offset")[0]).is_integer()
        if ".experts." in name:
            assert spec.get("has_moe_scheme", True), name

    info = inspect(dst)  # our reader agrees with the contract's loader registries
    for loader, reg in CONTRACT["loaders"].items():
        if loader == "section":
            continue
        ok = all(
            t in reg["moe" if re.search(r"\.experts\.\d+\.", n) else "linear"]
            for n, t in entries.items()
            if t != "FLOAT" and n.endswith(".weight")
        )
        assert info["ascend"]["loaders"][loader]["accepts"] is ok, (loader, info["ascend"]["loaders"][loader])
    return desc


def test_contract_and_code_agree():
    assert [t.value for t in ascend.PRIORITY] == CONTRACT["description"]["priority_low_to_high"]
    assert sorted(t.value for t in ascend.WRITABLE) == sorted(TYPES)
    assert {k: {kk: sorted(vv) for kk, vv in v.items()} for k, v in ascend.LOADERS.items()} == {
        k: {kk: sorted(vv) for kk, vv in v.items() if kk != "section"}
        for k, v in CONTRACT["loaders"].items()
        if k != "section"
    }
    assert [p for p, _ in ascend.FLOAT_RULES] == CONTRACT["float_rules"]["patterns"]
    for t in TYPES:
        spec = CONTRACT["types"][t]
        for mod in ("up_proj", "o_proj"):
            got = ascend.entries(ascend.AscendType.parse(t), f"m.{mod}.weight", (70, 208))
            assert [(n, d, list(s)) for n, d, s in got] == [
                (f"m.{mod}.{p}", w["dtype"], [_shape(e, 70, 208, mod) for e in w["shape"]])
                for p, w in spec["tensors"].items()
            ]


@pytest.mark.parametrize("atype", TYPES)
def test_every_type_from_dense_meets_the_contract(synth, atype, tmp_path):
    src = synth / "bf16"
    kw = {}
    if atype == "W8A8":
        kw["activation_scales"] = str(activation_scales(src, tmp_path / "acts.json"))
    if atype == "W8A16":  # no MoE scheme in either loader: the experts stay FLOAT
        kw["exclude"] = ("*.experts.*",)
    if atype == "W4A8_DYNAMIC":  # scale_bias is defined for q/k/v/o/gate/up/down, and down's K must split in 16
        kw["exclude"] = ("*.self_attn.*", "*.down_proj.*", "*.experts.*")
    s = convert(src, tmp_path / "out", atype, shard_size=150_000, **kw)
    assert s["verify"]["ok"] and len(s["files"]) > 1
    desc = check_contract(tmp_path / "out", src)
    quantized = {n: v for n, v in desc.items() if n.endswith(".weight") and v not in ("FLOAT",)}
    mod = "shared_experts.up_proj" if atype == "W4A8_DYNAMIC" else "experts.2.down_proj"
    assert f"model.layers.3.mlp.{mod}.weight" in quantized or atype == "W8A16"
    if atype == "W8A8":
        assert desc["model.layers.3.mlp.experts.0.up_proj.weight"] == "W8A8_DYNAMIC"
        assert desc["model.layers.0.self_attn.o_proj.weight"] == "W8A8"
    for n, rep in s["tensors"].items():
        if rep["action"] == "quantize":
            assert rep["sqnr_db"] > (15 if "4" in atype[:2] else 25), (n, rep)
    # read back: dequant and diff see the values the loaders would compute
    run(tmp_path / "out", tmp_path / "dense", Options(mode="dequant", dtype="fp32"), progress=None, verify=True)
    d = diff(tmp_path / "out", tmp_path / "dense")
    assert d["identical"], [r for r in d["tensors"] if r["status"] != "identical"][:2]


def test_w8a8_dynamic_scales_are_bf16_and_sqnr_reported(synth, tmp_path):
    src = synth / "bf16"
    s = convert(src, tmp_path / "out", "W8A8_DYNAMIC")
    out, dense = Checkpoint.open(tmp_path / "out"), Checkpoint.open(src)
    reps = {n: r for n, r in s["tensors"].items() if r["action"] == "quantize"}
    assert len(reps) == 2 * 4 + 3 + 4 * 3  # MLA q_a, q_b, kv_a, o in layers 0 and 3, an MLP, 3 experts + shared
    for n, rep in reps.items():
        scale = out.read(n[: -len("weight")] + "weight_scale")
        assert scale.dtype == np.float32 and _bf16_exact(scale)
        w = dense.read(n).astype(np.float64)
        got = out.read(n).astype(np.float64) * scale
        sqnr = 10 * np.log10(np.sum(w**2) / np.sum((got - w) ** 2))
        assert rep["sqnr_db"] == pytest.approx(sqnr, abs=1e-3) and rep["type"] == "W8A8_DYNAMIC"
        assert np.abs(out.read(n)).max() == 127 or out.read(n).min() == -128  # the scale is used in full


def test_ue8m0_source_to_mxfp8_is_a_relayout(synth, tmp_path):
    s = convert(synth / "v31", tmp_path / "mx", "W8A8_MXFP8")
    check_contract(tmp_path / "mx", synth / "bf16")
    acts = {r["action"] for r in s["tensors"].values()}
    assert acts == {"copy", "replicate-scales", "dequantize"}  # kv_b_proj and MTP come out of FP8 as FLOAT
    assert s["tensors"]["model.layers.0.self_attn.kv_b_proj.weight"]["action"] == "dequantize"
    assert s["tensors"]["model.layers.61.eh_proj.weight"]["action"] == "dequantize"
    assert all(t["exact"] for t in s["verify"]["tensors"].values())
    fp8, mx = Checkpoint.open(synth / "v31"), Checkpoint.open(tmp_path / "mx")
    w = "model.layers.3.mlp.experts.1.gate_proj.weight"
    assert np.array_equal(fp8.read(w).view(np.uint8), mx.read(w).view(np.uint8))  # codes kept
    sc = fp8.read(w[: -len("weight")] + "weight_scale_inv")
    assert np.array_equal(
        mx.read(w[: -len("weight")] + "weight_scale"),
        ((sc.view(np.uint32) >> 23) & 0xFF).astype(np.uint8)[np.arange(74) // 128][:, np.arange(7) // 4],
    )
    assert diff(synth / "v31", tmp_path / "mx")["identical"]


def test_non_power_of_two_source_reports_the_added_error(synth, tmp_path):
    s = run(
        synth / "v3", tmp_path / "mx", Options(mode="convert", layout="ascend", preset="W8A8_MXFP8"), progress=None
    ).summary
    req = [r for r in s["tensors"].values() if r["action"] == "requantize"]
    assert req and all(r["sqnr_db"] > 25 and r["max_abs_error"] > 0 for r in req)
    assert any("not powers of two" in n for n in s["notes"])
    check_contract(tmp_path / "mx", synth / "bf16")


def test_fp16_model_writes_w8a8_deq_scale_as_int64(synth, tmp_path):
    src = write_dense(
        tmp_path / "f16",
        {
            "model.layers.0.mlp.down_proj.weight": np.random.default_rng(2)
            .standard_normal((70, 96))
            .astype(np.float16),
            "model.layers.0.mlp.down_proj.bias": np.zeros(70, np.float16),
        },
        config={"torch_dtype": "float16", "num_hidden_layers": 1},
    )
    acts = tmp_path / "a.json"
    acts.write_text(json.dumps({"model.layers.0.mlp.down_proj": {"input_scale": 0.02, "input_offset": 5}}))
    with pytest.raises(ConversionError, match="has a bias"):
        convert(src, tmp_path / "o", "W8A8", activation_scales=str(acts))
    (src / "model.safetensors").unlink()
    write_dense(
        src,
        {"model.layers.0.mlp.down_proj.weight": np.random.default_rng(2).standard_normal((70, 96)).astype(np.float16)},
        config={"torch_dtype": "float16", "num_hidden_layers": 1},
    )
    convert(src, tmp_path / "o", "W8A8", activation_scales=str(acts))
    out = Checkpoint.open(tmp_path / "o")
    assert out.info("model.layers.0.mlp.down_proj.deq_scale").dtype == "I64"
    q = out.read("model.layers.0.mlp.down_proj.weight").astype(np.int64)
    assert np.array_equal(out.read("model.layers.0.mlp.down_proj.quant_bias"), -5 * q.sum(axis=1))


def test_smollm2_through_deepseek_to_mxfp8_dequantizes_byte_for_byte(tmp_path):
    pytest.importorskip("transformers")
    from fp8port.models import smollm2

    src = smollm2()
    run(src, tmp_path / "fp8", Options(mode="convert", preset="deepseek-v3.1"), progress=None)
    s = convert(tmp_path / "fp8", tmp_path / "mx", "W8A8_MXFP8")
    assert s["verify"]["ok"] and s["counts"]["replicate-scales"] == 210
    assert all(t["exact"] for t in s["verify"]["tensors"].values()) and len(s["verify"]["tensors"]) == 210
    run(tmp_path / "fp8", tmp_path / "a", Options(mode="dequant"), progress=None, verify=True)
    run(tmp_path / "mx", tmp_path / "b", Options(mode="dequant"), progress=None, verify=True)
    a, b = Checkpoint.open(tmp_path / "a"), Checkpoint.open(tmp_path / "b")
    assert set(b.tensors) == set(a.tensors) | {"lm_head.weight"}  # msModelSlim's clone of the tied embedding
    for n in b.tensors:
        want = a.read("model.embed_tokens.weight" if n == "lm_head.weight" else n)
        assert want.dtype == b.read(n).dtype and want.tobytes() == b.read(n).tobytes(), n
    assert (tmp_path / "a" / "config.json").read_bytes() == (tmp_path / "b" / "config.json").read_bytes()
    assert not (tmp_path / "b" / "quant_model_description.json").exists()
    info = inspect(tmp_path / "mx")
    assert info["layout"] == "ascend" and info["preset"] == "W8A8_MXFP8" and info["quantized"] == 210
    assert info["parameters"] == 134_515_008 + 49152 * 576 and not info["warnings"]  # lm_head stored: a clone
    assert all(v["accepts"] for v in info["ascend"]["loaders"].values())
    ref = fp8port.dequantize(
        fp8port.quantize(Checkpoint.open(src).read("model.layers.5.mlp.up_proj.weight"), "deepseek-v3.1"), "bfloat16"
    )
    got = Checkpoint.open(tmp_path / "b").read("model.layers.5.mlp.up_proj.weight")
    assert np.array_equal(ref.view(np.uint16), got.view(np.uint16))


# ---- msModelSlim's defaults and fp8port's variants (the proof against msModelSlim itself: tests/peers) --------


def test_defaults_are_msmodelslim_rules_and_variants_are_named(synth, tmp_path):
    """Each type quantizes with msModelSlim's rule (float32 twins on a float32 model); TYPE:PRESET with another
    preset that stores the same thing; a preset that stores something else is refused."""
    for t, preset in (
        ("W8A8_DYNAMIC", "msmodelslim-int8"),
        ("W8A8_MXFP8", "msmodelslim-mxfp8"),
        ("W4A8_DYNAMIC", "msmodelslim-int4"),
        ("W4A4_MXFP4", "msmodelslim-mxfp4"),
    ):
        assert ascend.target(t)[1] == get_preset(preset).weight
        f32 = ascend.target(t, "F32")[1]
        assert f32.scale_rule.value == get_preset(preset).weight.scale_rule.value + "_f32"
        assert f32.apply.value != "bf16_divide"
    src, w = synth / "bf16", "model.layers.0.mlp.down_proj.weight"
    x = Checkpoint.open(src).read(w).astype(np.float32)
    for spec, preset in (
        ("W8A8_DYNAMIC:ascend-int8-bf16ceil", "ascend-int8-bf16ceil"),
        ("W8A8_DYNAMIC", "msmodelslim-int8"),
        ("W8A8_MXFP8:mxfp8", "mxfp8"),
    ):
        run(src, tmp_path / spec, Options(mode="convert", layout="ascend", preset=spec), progress=None)
        q, out = fp8port.quantize(x, preset), Checkpoint.open(tmp_path / spec)
        assert np.array_equal(out.read(w).view(np.uint8), np.asarray(q.codes)), spec
    a, b = (Checkpoint.open(tmp_path / s).read(w) for s in ("W8A8_DYNAMIC", "W8A8_DYNAMIC:ascend-int8-bf16ceil"))
    assert not np.array_equal(a, b)  # the two int8 rules part on these weights
    for bad in ("W8A8_MXFP8:mxint8", "W4A4_MXFP4:mxfp8", "W8A16:msmodelslim-int4"):
        with pytest.raises(ConversionError, match="stores"):
            convert(src, tmp_path / "bad", bad)
        _nothing_at(tmp_path / "bad")


def test_layout_as_msmodelslim_saves_it(tmp_path, rng):
    """Tied lm_head cloned, tensors in module order (layers by index), a quantized Linear's bias in float32,
    one numbered shard with an index, no __metadata__, config.json copied byte for byte."""
    t = {"model.embed_tokens.weight": rng.standard_normal((64, 32)), "model.norm.weight": rng.standard_normal(32)}
    for i in (0, 1, 10):
        p = f"model.layers.{i}."
        t |= {
            p + "self_attn.q_proj.weight": rng.standard_normal((32, 32)),
            p + "self_attn.q_proj.bias": rng.standard_normal(32),
            p + "mlp.down_proj.weight": rng.standard_normal((32, 64)),
            p + "input_layernorm.weight": rng.standard_normal(32),
        }
    src = write_dense(
        tmp_path / "src",
        {k: v.astype(BF16) for k, v in t.items()},
        config={"architectures": ["LlamaForCausalLM"], "tie_word_embeddings": True},
    )
    run(
        src,
        tmp_path / "out",
        Options(mode="convert", layout="ascend", preset="W8A8_DYNAMIC"),
        progress=None,
        verify=True,
    )
    out = Checkpoint.open(tmp_path / "out")
    embed = out.read("model.embed_tokens.weight")
    assert np.array_equal(out.read("lm_head.weight").view(np.uint16), embed.view(np.uint16))
    assert out.info("model.layers.1.self_attn.q_proj.bias").dtype == "F32"
    desc = json.loads((tmp_path / "out" / "quant_model_description.json").read_text())
    names = [n for n in desc if n not in ("version", "model_quant_type", "metadata", "group_size", "optional")]
    assert names[:6] == [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.q_proj.weight_scale",
        "model.layers.0.self_attn.q_proj.weight_offset",
        "model.layers.0.self_attn.q_proj.bias",
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.0.mlp.down_proj.weight_scale",
    ]
    assert names.index("model.layers.10.mlp.down_proj.weight") > names.index("model.layers.1.mlp.down_proj.weight")
    assert names[-3:] == ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    assert desc["model.layers.0.self_attn.q_proj.bias"] == "FLOAT" and desc["model_quant_type"] == "W8A8_DYNAMIC"
    index = json.loads((tmp_path / "out" / "quant_model_weights.safetensors.index.json").read_text())
    assert list(index["weight_map"]) == names
    shard = tmp_path / "out" / "quant_model_weights-00001-of-00001.safetensors"
    header = json.loads(shard.read_bytes()[8 : 8 + int.from_bytes(shard.read_bytes()[:8], "little")])
    assert "__metadata__" not in header
    assert (tmp_path / "out" / "config.json").read_bytes() == (src / "config.json").read_bytes()


# ---- errors leave nothing behind ------------------------------------------------------------------


def _nothing_at(dst: Path):
    assert not dst.exists() and not staging_dir(dst).exists()


@pytest.mark.parametrize(
    "atype, kw, error, match",
    [
        ("W9A9", {}, UnknownNameError, "unknown AscendV1 quant type 'W9A9'; valid: W4A4_MXFP4"),
        ("W8A8", {}, ConversionError, "needs calibrated input_scale/input_offset"),
        ("W4A4_DYNAMIC", {}, ConversionError, "reads but does not write"),
        ("WFP8AFP8_DYNAMIC", {}, ConversionError, "registers W8A8FP8_DYNAMIC"),
        ("W8A16", {}, ConversionError, "W8A16 has no MoE scheme"),
        ("W8A8_DYNAMIC", {"exclude": ("*.q_a_proj.*",)}, ConversionError, "need one type"),
        ("W8A8_MXFP8", {"scale_dtype": "e8m0"}, ConversionError, "does not apply"),
    ],
)
def test_clear_errors(synth, tmp_path, atype, kw, error, match):
    with pytest.raises(error, match=match):
        convert(synth / "bf16", tmp_path / "out", atype, **kw)
    _nothing_at(tmp_path / "out")


def test_block_that_does_not_fit_and_bad_data(tmp_path, rng):
    odd = write_dense(
        tmp_path / "odd", {"model.layers.0.mlp.down_proj.weight": rng.standard_normal((64, 75)).astype(BF16)}
    )
    for t in ("W4A4_MXFP4", "W4A8_MXFP"):
        with pytest.raises(ConversionError, match="K = 75 is odd"):
            convert(odd, tmp_path / "out", t)
        _nothing_at(tmp_path / "out")
    convert(odd, tmp_path / "ok", "W8A8_MXFP8")  # a ragged last 1x32 block is fine for MXFP8
    w = rng.standard_normal((64, 96)).astype(np.float32)
    w[3, 7] = np.nan
    bad = write_dense(tmp_path / "nan", {"model.layers.0.mlp.down_proj.weight": w})
    with pytest.raises(NonFiniteError):  # raised while writing, after planning: staging is removed
        convert(bad, tmp_path / "out", "W8A8_MXFP8")
    _nothing_at(tmp_path / "out")
    with pytest.raises(NonFiniteError, match="0xFF"):
        convert(bad, tmp_path / "out", "W8A8_MXFP8", nonfinite="keep")
    _nothing_at(tmp_path / "out")


def test_inspect_warns_for_broken_rules(synth, tmp_path):
    out = tmp_path / "out"
    convert(synth / "bf16", out, "W8A8_DYNAMIC")
    desc = json.loads((out / "quant_model_description.json").read_text())
    desc["model.layers.0.self_attn.o_proj.weight"] = "WFP8AFP8_DYNAMIC"
    desc["model.layers.3.mlp.gate.weight"] = "W8A8_DYNAMIC"
    desc["model.layers.0.self_attn.kv_b_proj.weight"] = "W8A8_DYNAMIC"
    del desc["model.layers.0.mlp.up_proj.weight"]
    (out / "quant_model_description.json").write_text(json.dumps(desc))
    info = inspect(out)
    text = " | ".join(info["warnings"])
    assert "§2.5" in text and "kv_b_proj" in text and "router gate" in text
    vllm = " | ".join(info["ascend"]["loaders"]["vllm-ascend"]["reasons"])
    assert not info["ascend"]["loaders"]["vllm-ascend"]["accepts"]
    assert "no description entry" in vllm and "W8A8FP8_DYNAMIC" in vllm and "kv_b_proj" in vllm


def test_resume_and_dry_run(synth, tmp_path):
    from fp8port.checkpoint.plan import make_plan

    opts = Options(mode="convert", layout="ascend", preset="W8A8_MXFP8", shard_size=100_000)
    plan = make_plan(synth / "v31", opts)
    assert plan.shard_names[0] == f"quant_model_weights-00001-of-{len(plan.shards):05d}.safetensors"

    class Stop(Exception):
        pass

    def stop(i):
        if i == 1:
            raise Stop

    with pytest.raises(Stop):
        run(synth / "v31", tmp_path / "out", opts, progress=None, after_shard=stop)
    res = run(synth / "v31", tmp_path / "out", opts, progress=None, resume=True)
    assert res.resumed_shards == 2
    run(synth / "v31", tmp_path / "ref", opts, progress=None)
    for p in sorted((tmp_path / "ref").iterdir()):
        if p.name != "fp8port-summary.json":
            assert p.read_bytes() == (tmp_path / "out" / p.name).read_bytes(), p.name


def test_errors_are_fp8port_errors():
    with pytest.raises(Fp8portError):
        ascend.AscendType.writable("nonsense")
