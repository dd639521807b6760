"""compressed-tensors NVFP4 / MXFP4 / MXFP8 and ModelOpt NVFP4, written and read by fp8port, read back by
compressed-tensors itself (transformers CompressedTensorsConfig, main venv), and converted between the two
NVFP4 conventions. llm-compressor's and ModelOpt's own files: tests/peers/test_layouts_mx.py (slow)."""

import json

import ml_dtypes
import numpy as np
import pytest

import fp8port
from fp8port.checkpoint import Checkpoint, Options, layouts, run
from fp8port.checkpoint.inspect import inspect
from fp8port.codec.packing import pack
from fp8port.errors import CheckpointError, LayoutError
from fp8port.quant import nvfp4
from fp8port.quant.storage import e8m0_values

from .conftest import llama_folder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

BF16 = ml_dtypes.bfloat16
L0 = "model.layers.0."
QKV = [L0 + f"self_attn.{p}_proj.weight" for p in "qkv"]
GATE_UP = [L0 + "mlp.gate_proj.weight", L0 + "mlp.up_proj.weight"]
ALONE = [L0 + "self_attn.o_proj.weight", L0 + "mlp.down_proj.weight"]
FORMATS = {
    "ct-nvfp4": ("nvfp4-pack-quantized", "NVFP4A16"),
    "ct-mxfp4": ("mxfp4-pack-quantized", "MXFP4A16"),
    "ct-mxfp8": ("mxfp8-quantized", "MXFP8A16"),
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A random tiny Llama (hidden 96, MLP 160: K multiples of 32) as BF16, and in each microscale preset."""
    root = tmp_path_factory.mktemp("micro")
    llama_folder(root / "bf16", seed=3)
    for preset in FORMATS:
        run(root / "bf16", root / preset, Options(mode="convert", preset=preset), progress=None, verify=True)
    return root


def _bf16(t):
    return t.contiguous().view(torch.int16).numpy().view(BF16)


def _values(folder, dtype="bfloat16"):
    ck = Checkpoint.open(folder)
    h, _ = layouts.detect(ck)
    return {n: h.values(ck, w, dtype) for n, w in h.weights(ck).items()}


def _compressed_tensors_reads(folder) -> list[str]:
    """Weights whose compressed-tensors decompression (through transformers) differs from fp8port's."""
    from transformers import CompressedTensorsConfig

    sd = transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.bfloat16, quantization_config=CompressedTensorsConfig(dequantize=True)
    ).state_dict()
    ours = _values(folder)
    assert len(ours) == 14
    return [n for n, v in ours.items() if v.tobytes() != _bf16(sd[n]).tobytes()]


@pytest.mark.parametrize("preset", sorted(FORMATS))
def test_presets_write_the_microscale_formats_compressed_tensors_reads(root, preset):
    fmt, group = FORMATS[preset]
    qc = json.loads((root / preset / "config.json").read_text())["quantization_config"]
    assert qc["format"] == fmt and list(qc["config_groups"]) == [group] and qc["version"] == "0.19.0"
    args = qc["config_groups"][group]["weights"]
    bits = {"ct-nvfp4": (4, 16), "ct-mxfp4": (4, 32), "ct-mxfp8": (8, 32)}[preset]
    assert (args["num_bits"], args["group_size"]) == bits
    ck = Checkpoint.open(root / preset)
    d = ALONE[1][: -len(".weight")]  # down_proj [96, 160]
    codes = {"ct-mxfp8": (d + ".weight", "F8_E4M3", (96, 160))}.get(preset, (d + ".weight_packed", "U8", (96, 80)))
    assert (ck.info(codes[0]).dtype, ck.info(codes[0]).shape) == codes[1:]
    scale = ck.info(d + ".weight_scale")
    assert (scale.dtype, scale.shape) == (("F8_E4M3", (96, 10)) if preset == "ct-nvfp4" else ("U8", (96, 5)))
    assert (d + ".weight_global_scale" in ck.tensors) == (preset == "ct-nvfp4")
    assert _compressed_tensors_reads(root / preset) == []
    info = inspect(root / preset)
    assert info["layout"] == "compressed-tensors" and info["format"] == fmt and info["preset"] == preset
    assert "vLLM" in info["loaders"] and "transformers" in info["loaders"]


def test_mx_bytes_are_the_presets(root):
    """The layout stores what fp8port.quantize gives: codes packed low nibble first, E8M0 bytes as U8."""
    src = Checkpoint.open(root / "bf16")
    for preset in ("ct-mxfp4", "ct-mxfp8"):
        ck = Checkpoint.open(root / preset)
        for n in QKV + ALONE:
            q = fp8port.quantize(src.read(n), preset)
            m = n[: -len(".weight")]
            codes = pack(q.codes, "float4_e2m1fn") if preset == "ct-mxfp4" else q.codes
            stored = ck.read(m + (".weight_packed" if preset == "ct-mxfp4" else ".weight")).view(np.uint8)
            assert np.array_equal(stored, codes), n
            assert np.array_equal(ck.read(m + ".weight_scale"), np.asarray(q.scale).view(np.uint8)), n
            assert np.array_equal(e8m0_values(ck.read(m + ".weight_scale")), q.scale_fp32)


@pytest.mark.parametrize("preset", ["ct-mxfp4", "ct-mxfp8"])
def test_mx_round_trips_through_fp8port_layout_byte_for_byte(root, tmp_path, preset):
    """compressed-tensors MX -> fp8port -> compressed-tensors without --preset: codes and E8M0 bytes kept."""
    for src, dst, layout in (
        (root / preset, tmp_path / "own", "fp8port"),
        (tmp_path / "own", tmp_path / "back", "compressed-tensors"),
    ):
        res = run(src, dst, Options(mode="convert", layout=layout), progress=None, verify=True)
        assert res.summary["counts"]["replicate-scales"] == 14 and res.summary["verify"]["ok"]
    a, b = Checkpoint.open(root / preset), Checkpoint.open(tmp_path / "back")
    assert a.tensors.keys() == b.tensors.keys()
    assert all(a.read(n).tobytes() == b.read(n).tobytes() for n in a.tensors)
    assert (
        json.loads((tmp_path / "back" / "config.json").read_text())["quantization_config"]
        == json.loads((root / preset / "config.json").read_text())["quantization_config"]
    )


def test_nvfp4_fused_sets_share_one_global_scale(root):
    """q/k/v and gate/up share g = ct_global_scale(max amax) as llm-compressor writes them; o_proj and
    down_proj keep their own, equal to quantize(x, 'ct-nvfp4')."""
    src, ck = Checkpoint.open(root / "bf16"), Checkpoint.open(root / "ct-nvfp4")
    g = {n: ck.read(n[: -len("weight")] + "weight_global_scale")[0] for n in QKV + GATE_UP + ALONE}
    for group in (QKV, GATE_UP):
        amax = max(np.abs(src.read(n).astype(np.float32)).max() for n in group)
        assert {g[n] for n in group} == {float(nvfp4.ct_global_scale(amax))}
        for n in group:
            codes, s, _ = nvfp4.ct_quantize(src.read(n).astype(np.float32), amax)
            assert np.array_equal(ck.read(n + "_packed"), pack(codes, "float4_e2m1fn")), n
            assert np.array_equal(ck.read(n[: -len("weight")] + "weight_scale").view(np.uint8), s), n
    assert len({g[n] for n in QKV + GATE_UP + ALONE}) > 2
    for n in ALONE:
        q = fp8port.quantize(src.read(n), "ct-nvfp4")
        assert np.array_equal(ck.read(n + "_packed"), pack(q.codes, "float4_e2m1fn")) and g[n] == q.tensor_scale


def _same(ck, module, g, p) -> bool:
    """Whether a weight's values are the same bits read with divisor g and with multiplier p."""
    from fp8port.codec.packing import unpack

    codes, s = unpack(ck.read(module + "weight"), "float4_e2m1fn"), ck.read(module + "weight_scale").view(np.uint8)
    a, b = (nvfp4.dequantize(codes, m) for m in (nvfp4.ct_multiplier(s, g), nvfp4.modelopt_multiplier(s, p)))
    return a.tobytes() == b.tobytes()


@pytest.fixture(scope="module")
def conventions(root):
    """ct-nvfp4 -> modelopt -> compressed-tensors, without --preset (codes kept)."""
    out = {}
    for src, layout in (("ct-nvfp4", "modelopt"), ("modelopt", "compressed-tensors")):
        out[layout] = run(
            root / src, root / layout, Options(mode="convert", layout=layout), progress=None, verify=True
        ).summary
    return out


def test_nvfp4_convention_change_keeps_codes_and_reports_what_moves(root, conventions):
    ct, mo = Checkpoint.open(root / "ct-nvfp4"), Checkpoint.open(root / "modelopt")
    s = conventions["modelopt"]
    assert s["counts"]["reciprocal-tensor-scale"] == 14 and s["verify"]["ok"]
    for n in QKV + GATE_UP + ALONE:
        m = n[: -len("weight")]
        assert np.array_equal(mo.read(n), ct.read(n + "_packed")) and np.array_equal(
            mo.read(m + "weight_scale").view(np.uint8), ct.read(m + "weight_scale").view(np.uint8)
        )
        g = ct.read(m + "weight_global_scale")[0]
        p = mo.read(m + "weight_scale_2")
        assert p.shape == () and p == np.float32(1) / g  # ModelOpt's multiplier: fp32(1 / g)
        # exact exactly where no value moved (a move is one float32 rounding of a block multiplier)
        assert s["tensors"][n]["exact"] == _same(mo, m, ct.read(m + "weight_global_scale")[0], p)
        assert s["verify"]["tensors"][n]["exact"] == s["tensors"][n]["exact"], n
        assert s["tensors"][n]["tensor_scale"] == [float(g), float(p)]
    # on these weights some tensors move and some do not; in bf16, the model's dtype, none moves
    assert {t["exact"] for t in s["verify"]["tensors"].values()} == {True, False}
    assert all(t["exact_in_bfloat16"] for t in s["verify"]["tensors"].values())
    # and back: codes and block scales return byte for byte; g' = fp32(1 / p) need not be g (a double
    # reciprocal is not the identity in float32), and the summary says where it is not
    back, s = Checkpoint.open(root / "compressed-tensors"), conventions["compressed-tensors"]
    assert s["counts"]["reciprocal-tensor-scale"] == 14 and s["verify"]["ok"]
    for n in ct.tensors:
        if not n.endswith("weight_global_scale"):
            assert np.array_equal(back.read(n), ct.read(n)), n
            continue
        p, g = mo.read(n.replace("global_scale", "scale_2")), back.read(n)[0]
        assert g == np.float32(1) / p
        w = n.replace("weight_global_scale", "weight")
        assert s["tensors"][w]["exact"] == _same(mo, w[: -len("weight")], g, p), w
    assert _compressed_tensors_reads(root / "compressed-tensors") == []


def test_power_of_two_global_scales_convert_exactly(tmp_path):
    """amax 5.25 gives g = bf16(bf16(1 / 5.25) * 2688) = 512: 1 / g is exact, so is every value."""
    llama_folder(tmp_path / "bf16", seed=4)
    ck = Checkpoint.open(tmp_path / "bf16")
    from fp8port.checkpoint.safetensors_io import Entry, write_file

    arrays = {n: ck.read(n) for n in ck.tensors}
    for n in arrays:
        if n.endswith("proj.weight"):
            a = arrays[n].astype(np.float32)
            arrays[n] = (a / np.abs(a).max() * 5.25).astype(BF16)
    (tmp_path / "bf16" / "model.safetensors").unlink()
    write_file(
        tmp_path / "bf16" / "model.safetensors",
        [Entry(n, ck.info(n).dtype, a.shape, lambda a=a: a) for n, a in arrays.items()],
    )
    run(tmp_path / "bf16", tmp_path / "ct", Options(mode="convert", preset="ct-nvfp4"), progress=None)
    assert {float(Checkpoint.open(tmp_path / "ct").read(n[:-6] + "weight_global_scale")[0]) for n in QKV} == {512.0}
    res = run(tmp_path / "ct", tmp_path / "mo", Options(mode="convert", layout="modelopt"), progress=None, verify=True)
    assert all(t["exact"] and t["values_moved"] == 0 for t in res.summary["tensors"].values() if "exact" in t)
    assert all(t["exact"] for t in res.summary["verify"]["tensors"].values())


def test_fp8port_layout_keeps_the_divisor_convention(root, tmp_path):
    """ct-nvfp4 in fp8port's own layout: its weight_tensor_scale is compressed-tensors' divisor g, and the
    reader divides (the scheme's rule says so); re-laid out from compressed-tensors it is exact."""
    src = Checkpoint.open(root / "bf16")
    run(root / "bf16", tmp_path / "own", Options(mode="convert", preset="ct-nvfp4", layout="fp8port"), progress=None)
    res = run(
        root / "ct-nvfp4", tmp_path / "relaid", Options(mode="convert", layout="fp8port"), progress=None, verify=True
    )
    assert res.summary["counts"]["replicate-scales"] == 14 and res.summary["verify"]["ok"]
    for n in ALONE:
        want = fp8port.dequantize(fp8port.quantize(src.read(n), "ct-nvfp4"), "float32")
        assert np.array_equal(_values(tmp_path / "own", "float32")[n], want)
    assert all(
        np.array_equal(a, _values(root / "ct-nvfp4", "float32")[n])
        for n, a in _values(tmp_path / "relaid", "float32").items()
    )


def test_modelopt_written_from_dense(root, tmp_path):
    run(
        root / "bf16",
        tmp_path / "mo",
        Options(mode="convert", preset="nvfp4", layout="modelopt"),
        progress=None,
        verify=True,
    )
    hf = json.loads((tmp_path / "mo" / "hf_quant_config.json").read_text())
    assert hf["quantization"] == {
        "quant_algo": "W4A16_NVFP4",
        "kv_cache_quant_algo": None,
        "group_size": 16,
        "exclude_modules": ["lm_head"],
    }
    qc = json.loads((tmp_path / "mo" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "modelopt" and qc["quant_algo"] == "W4A16_NVFP4"
    assert "input_activations" not in qc["config_groups"]["group_0"]
    src, ck = Checkpoint.open(root / "bf16"), Checkpoint.open(tmp_path / "mo")
    p = {n: ck.read(n[: -len("weight")] + "weight_scale_2") for n in QKV + GATE_UP + ALONE}
    assert len({float(p[n]) for n in QKV}) == 1 and len({float(p[n]) for n in GATE_UP}) == 1  # vLLM keeps one
    for n in ALONE:  # unfused: exactly the nvfp4 preset
        q = fp8port.quantize(src.read(n), "nvfp4")
        assert np.array_equal(ck.read(n), pack(q.codes, "float4_e2m1fn")) and float(p[n]) == q.tensor_scale
    info = inspect(tmp_path / "mo")
    assert info["layout"] == "modelopt" and info["quant_algo"] == "W4A16_NVFP4" and "TensorRT-LLM" in info["loaders"]
    # found by hf_quant_config.json alone (older exports), and by tensor names alone
    cfg = json.loads((tmp_path / "mo" / "config.json").read_text())
    del cfg["quantization_config"]
    (tmp_path / "mo" / "config.json").write_text(json.dumps(cfg))
    assert inspect(tmp_path / "mo")["detected_by"].startswith("hf_quant_config.json")
    (tmp_path / "mo" / "hf_quant_config.json").unlink()
    assert inspect(tmp_path / "mo")["layout"] == "modelopt"
    assert _values(tmp_path / "mo").keys() == set(
        QKV + GATE_UP + ALONE + [n.replace("layers.0", "layers.1") for n in QKV + GATE_UP + ALONE]
    )


def _set(folder, change, file="config.json"):
    doc = json.loads((folder / file).read_text())
    change(doc)
    (folder / file).write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "case, error, match",
    [
        ("algo-fp8", LayoutError, "quant_algo 'FP8' is not read"),
        ("algo-hf-awq", LayoutError, "quant_algo 'NVFP4_AWQ' is not read"),
        ("group-32", CheckpointError, "group_size 32"),
        ("nvfp4-without-input-scale", CheckpointError, "input_scale' is missing"),
        ("ct-group-mismatch", CheckpointError, "group_size"),
        ("ct-no-global-scale", CheckpointError, "weight_global_scale"),
    ],
)
def test_hostile_configs_are_typed_errors(root, tmp_path, case, error, match):
    import shutil

    src = "ct-nvfp4" if case.startswith("ct-") else "modelopt"
    if src == "modelopt":
        run(root / "ct-nvfp4", tmp_path / "f", Options(mode="convert", layout="modelopt"), progress=None)
    else:
        shutil.copytree(root / src, tmp_path / "f")
    f = tmp_path / "f"
    if case == "algo-fp8":
        _set(f, lambda c: c["quantization_config"].update(quant_algo="FP8"))
    elif case == "algo-hf-awq":
        _set(f, lambda c: c.pop("quantization_config"))
        _set(f, lambda c: c["quantization"].update(quant_algo="NVFP4_AWQ"), "hf_quant_config.json")
    elif case == "group-32":
        _set(f, lambda c: c["quantization_config"]["config_groups"]["group_0"]["weights"].update(group_size=32))
    elif case == "nvfp4-without-input-scale":
        _set(f, lambda c: c["quantization_config"].update(quant_algo="NVFP4"))
    elif case == "ct-group-mismatch":
        _set(f, lambda c: c["quantization_config"]["config_groups"]["NVFP4A16"]["weights"].update(group_size=32))
    else:
        from fp8port.checkpoint.safetensors_io import Entry, write_file

        ck = Checkpoint.open(f)
        keep = {n: (ck.info(n).dtype, ck.read(n)) for n in ck.tensors if not n.endswith("q_proj.weight_global_scale")}
        (f / "model.safetensors").unlink()
        write_file(f / "model.safetensors", [Entry(n, d, a.shape, lambda a=a: a) for n, (d, a) in keep.items()])
    with pytest.raises(error, match=match):
        _values(f)
    with pytest.raises(error, match=match):
        run(f, tmp_path / "out", Options(mode="dequant"), progress=None)
    assert not (tmp_path / "out").exists()
    from fp8port.cli.main import main

    assert main(["dequant", str(f), str(tmp_path / "out")]) == 2 and not (tmp_path / "out").exists()


class _Stop(KeyboardInterrupt):
    pass


@pytest.mark.parametrize("kw", [{"preset": "ct-nvfp4"}, {"preset": "nvfp4", "layout": "modelopt"}])
def test_interrupted_conversion_resumes_byte_identical(root, tmp_path, kw):
    """Fused global scales are planned before any shard, so a resumed run writes the same bytes; the
    side file (hf_quant_config.json) appears only with the published folder."""
    from fp8port.checkpoint.staging import staging_dir

    from .conftest import tree_digest

    before = tree_digest(root / "bf16")
    opts = Options(mode="convert", shard_size=40_000, **kw)
    ref = run(root / "bf16", tmp_path / "ref", opts, progress=None)
    assert len(ref.plan.shards) >= 4

    def stop(i):
        if i == 1:
            raise _Stop

    with pytest.raises(_Stop):
        run(root / "bf16", tmp_path / "out", opts, progress=None, after_shard=stop)
    assert not (tmp_path / "out").exists() and staging_dir(tmp_path / "out").exists()
    assert run(root / "bf16", tmp_path / "out", opts, progress=None, resume=True).resumed_shards == 2
    assert tree_digest(tmp_path / "out") == tree_digest(tmp_path / "ref")
    assert tree_digest(root / "bf16") == before
