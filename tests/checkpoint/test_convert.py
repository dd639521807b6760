"""convert / dequant / rescale / inspect / diff on synthetic checkpoints: bytes, layouts, errors."""

import json
import os

import numpy as np
import pytest

import fp8port
from fp8port.checkpoint import Checkpoint, Options, run
from fp8port.checkpoint.diff import diff
from fp8port.checkpoint.inspect import inspect
from fp8port.checkpoint.staging import staging_dir
from fp8port.cli.main import main
from fp8port.errors import ConversionError, NonFiniteError, UnknownNameError
from fp8port.quant import PRESETS

from .conftest import tiny_llama, tree_digest, write_dense

QUANTIZED = [
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.1.mlp.down_proj.weight",
    "model.layers.0.self_attn.k_proj.weight",
    "model.layers.0.mlp.gate_proj.weight",
]
DENSE_KEPT = [
    "model.embed_tokens.weight",
    "lm_head.weight",
    "model.norm.weight",
    "model.layers.0.mlp.gate.weight",
    "model.layers.0.input_layernorm.weight",
]


def convert(src, dst, **kw):
    extra = {k: kw.pop(k) for k in ("resume", "overwrite", "verify", "workers") if k in kw}
    return run(src, dst, Options(mode="convert", **kw), progress=None, **extra)


def test_deepseek_v31_bytes_layout_and_config(dense, tmp_path):
    src, tensors = dense
    before = tree_digest(src)
    res = convert(src, tmp_path / "out", preset="deepseek-v3.1", verify=True)
    ck = Checkpoint.open(tmp_path / "out")
    for n in QUANTIZED:
        q = fp8port.quantize(tensors[n], "deepseek-v3.1")
        assert ck.info(n).dtype == "F8_E4M3"
        assert np.array_equal(ck.read(n).view(np.uint8), q.codes)  # equals fp8port.quantize bit for bit
        s = ck.read(n[: -len("weight")] + "weight_scale_inv")
        assert s.dtype == np.float32 and s.shape == (-(-q.shape[0] // 128), -(-q.shape[1] // 128))
        assert np.array_equal(s, q.scale_fp32)
    for n in DENSE_KEPT:  # embeddings, lm_head, norms, router gates stay as they were
        assert ck.info(n).dtype == "BF16" and np.array_equal(ck.read(n), tensors[n])
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["quantization_config"] == {
        "quant_method": "fp8",
        "fmt": "e4m3",
        "activation_scheme": "dynamic",
        "weight_block_size": [128, 128],
        "scale_fmt": "ue8m0",
    }
    assert (tmp_path / "out" / "tokenizer.json").read_text() == '{"version": "1.0"}'
    assert res.summary["verify"]["ok"] and tree_digest(src) == before  # SRC untouched
    summary = json.loads((tmp_path / "out" / "fp8port-summary.json").read_text())
    assert summary["counts"]["quantize"] == 8 and summary["preset"] == "deepseek-v3.1"
    assert not list(tmp_path.glob(".out.fp8port-partial*"))


def test_round_trip_is_exact_dequantization(dense, tmp_path):
    src, tensors = dense
    convert(src, tmp_path / "fp8", preset="deepseek-v3.1")
    res = run(tmp_path / "fp8", tmp_path / "bf16", Options(mode="dequant"), progress=None, verify=True)
    assert res.summary["verify"]["ok"]
    ck = Checkpoint.open(tmp_path / "bf16")
    for n in QUANTIZED:
        want = fp8port.dequantize(fp8port.quantize(tensors[n], "deepseek-v3.1"), "bfloat16")
        assert ck.info(n).dtype == "BF16" and np.array_equal(ck.read(n).view(np.uint16), want.view(np.uint16))
    assert "quantization_config" not in json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert set(ck.tensors) == set(tensors)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_converts_and_reads_back(preset, tmp_path, rng):
    tensors = tiny_llama(rng, layers=1)
    src = write_dense(tmp_path / "src", tensors)
    res = convert(src, tmp_path / "q", preset=preset, verify=True)
    assert res.summary["verify"]["ok"]
    back = run(tmp_path / "q", tmp_path / "d", Options(mode="dequant", dtype="fp32"), progress=None, verify=True)
    assert back.summary["verify"]["ok"]
    n = "model.layers.0.self_attn.q_proj.weight"
    want = fp8port.dequantize(fp8port.quantize(tensors[n], preset), "float32")
    assert np.array_equal(Checkpoint.open(tmp_path / "d").read(n), want)
    info = inspect(tmp_path / "q")
    assert info["preset"] == preset and info["quantized"] == 4


def test_e8m0_scales_and_compressed_tensors_layout(dense, tmp_path):
    src, tensors = dense
    convert(src, tmp_path / "e8", preset="deepseek-v3.1", scale_dtype="e8m0")
    ck = Checkpoint.open(tmp_path / "e8")
    n = QUANTIZED[0]
    s = ck.read(n[:-6] + "weight_scale_inv")
    assert ck.info(n[:-6] + "weight_scale_inv").dtype == "F8_E8M0"
    assert np.array_equal(s.astype(np.float32), fp8port.quantize(tensors[n], "deepseek-v3.1").scale_fp32)
    convert(src, tmp_path / "ct", preset="deepseek-v3", layout="compressed-tensors")
    cfg = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "compressed-tensors" and cfg["format"] == "float-quantized"
    assert cfg["config_groups"]["group_0"]["weights"]["block_structure"] == [128, 128]
    assert "lm_head" in cfg["ignore"]
    assert n[:-6] + "weight_scale" in Checkpoint.open(tmp_path / "ct").tensors
    d = diff(tmp_path / "e8", tmp_path / "ct")
    assert not d["identical"]  # v3.1 power-of-two vs v3 float scales
    assert all(r["status"] == "identical" for r in d["tensors"] if r["name"] in DENSE_KEPT)


def test_sharding_and_index(dense, tmp_path):
    src, _ = dense
    convert(src, tmp_path / "out", preset="deepseek-v3.1", shard_size=1_000_000)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and all((tmp_path / "out" / f).exists() for f in files)
    ck = Checkpoint.open(tmp_path / "out")
    assert index["metadata"]["total_size"] == sum(i.nbytes for _, i in ck.tensors.values())
    assert all(
        json.loads(
            (tmp_path / "out" / f).read_bytes()[
                8 : 8 + int.from_bytes((tmp_path / "out" / f).read_bytes()[:8], "little")
            ]
        )["__metadata__"]
        == {"format": "pt"}
        for f in files
    )


def test_rescale_to_ue8m0_and_mxfp8(dense, tmp_path):
    src, tensors = dense
    convert(src, tmp_path / "v3", preset="deepseek-v3")
    res = run(tmp_path / "v3", tmp_path / "v31", Options(mode="rescale", to="ue8m0"), progress=None, verify=True)
    n = QUANTIZED[0]
    assert res.summary["tensors"][n]["sqnr_db"] > 25  # the requantization error is reported per tensor
    assert inspect(tmp_path / "v31")["scales_all_powers_of_two"] is True
    res = run(tmp_path / "v31", tmp_path / "mx", Options(mode="rescale", to="mxfp8"), progress=None, verify=True)
    assert res.summary["verify"]["ok"] and all(t["exact"] for t in res.summary["verify"]["tensors"].values())
    assert np.array_equal(
        Checkpoint.open(tmp_path / "mx").read(n).view(np.uint8),
        Checkpoint.open(tmp_path / "v31").read(n).view(np.uint8),
    )  # codes kept
    with pytest.raises(ConversionError, match="not all powers of two"):
        run(tmp_path / "v3", tmp_path / "bad", Options(mode="rescale", to="mxfp8"), progress=None)
    assert not (tmp_path / "bad").exists()


def test_dry_run_writes_nothing(dense, tmp_path, capsys):
    src, _ = dense
    assert main(["convert", str(src), str(tmp_path / "out"), "--preset", "mxfp4", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["layout_out"] == "fp8port" and any(t["action"] == "quantize" for t in plan["tensors"])
    assert not (tmp_path / "out").exists() and not staging_dir(tmp_path / "out").exists()


@pytest.mark.parametrize("user_policy", [None, "ACTIVE"])
def test_cli_conversion_leaves_a_core_to_hashing(dense, tmp_path, monkeypatch, capsys, user_policy):
    """While `fp8port convert` runs, the kernels use one CPU fewer (the output is hashed on a thread of
    its own) and libgomp waits passively unless the user chose; both are undone afterwards."""
    from fp8port import cpu
    from fp8port.checkpoint import convert as cv

    if user_policy is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", user_policy)
    seen, real = [], cv.run
    monkeypatch.setattr(
        cv, "run", lambda *a, **k: seen.append((cpu.threads(), os.environ.get("OMP_WAIT_POLICY"))) or real(*a, **k)
    )
    before = cpu.threads()
    src, _ = dense
    assert main(["convert", str(src), str(tmp_path / "out"), "--preset", "deepseek-v3.1", "-q"]) == 0
    assert seen == [(min(before, max(1, os.cpu_count() - 1)), user_policy or "PASSIVE")]
    assert cpu.threads() == before and os.environ.get("OMP_WAIT_POLICY") == user_policy
    capsys.readouterr()


# ---- errors: typed, named, non-zero exit, nothing visible in DST --------------------------


def _cli_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fp8port: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_destination_rules(dense, tmp_path, capsys):
    src, _ = dense
    assert "inside the source" in _cli_error(capsys, ["convert", str(src), str(src / "sub"), "--preset", "mxfp8"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    assert "not empty" in _cli_error(capsys, ["convert", str(src), str(tmp_path / "full"), "--preset", "mxfp8"])
    assert main(["convert", str(src), str(tmp_path / "full"), "--preset", "mxfp8", "--overwrite", "-q"]) == 0
    assert not (tmp_path / "full" / "x").exists() and (tmp_path / "full" / "config.json").exists()
    assert "unknown preset" in _cli_error(capsys, ["convert", str(src), str(tmp_path / "o"), "--preset", "fp7"])
    assert not (tmp_path / "o").exists()


def _corrupt(folder, name, mutate):
    p = folder / name
    p.write_bytes(mutate(p.read_bytes()))


@pytest.mark.parametrize(
    "case,match",
    [
        ("missing-file", "does not exist"),
        ("index-names-missing-tensor", "does not contain it"),
        ("index-escapes", "outside the checkpoint"),
        ("corrupt-header", "header length"),
        ("truncated", "trailing|outside|needs"),
    ],
)
def test_broken_sources(dense, tmp_path, capsys, case, match):
    src, _ = dense
    index = src / "model.safetensors.index.json"
    idx = json.loads(index.read_text())
    if case == "missing-file":
        (src / "model-00002-of-00002.safetensors").unlink()
    elif case == "index-names-missing-tensor":
        idx["weight_map"]["model.ghost.weight"] = "model-00001-of-00002.safetensors"
        index.write_text(json.dumps(idx))
    elif case == "index-escapes":
        idx["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors"
        index.write_text(json.dumps(idx))
    elif case == "corrupt-header":
        _corrupt(src, "model-00001-of-00002.safetensors", lambda b: b"\xff" * 8 + b[8:])
    else:
        _corrupt(src, "model-00001-of-00002.safetensors", lambda b: b[:-100])
    err = _cli_error(capsys, ["convert", str(src), str(tmp_path / "out"), "--preset", "deepseek-v3.1"])
    assert __import__("re").search(match, err)
    assert not (tmp_path / "out").exists() and not staging_dir(tmp_path / "out").exists()


def test_quantized_sources_checked(dense, tmp_path, capsys):
    src, _ = dense
    convert(src, tmp_path / "fp8", preset="deepseek-v3.1")
    fp8 = tmp_path / "fp8"
    # a scale grid that does not fit the weight
    from fp8port.checkpoint.safetensors_io import Entry, write_file

    ck = Checkpoint.open(fp8)
    arrays = {n: ck.read(n) for n in ck.tensors}
    n = QUANTIZED[0][:-6] + "weight_scale_inv"
    arrays[n] = np.ones((3, 3), np.float32)
    dt = {n2: ck.info(n2).dtype for n2 in ck.tensors}
    (fp8 / "model.safetensors").unlink()
    write_file(fp8 / "model.safetensors", [Entry(k, dt[k], a.shape, lambda a=a: a) for k, a in arrays.items()])
    err = _cli_error(capsys, ["dequant", str(fp8), str(tmp_path / "d")])
    assert "grid [3, 3]" in err and QUANTIZED[0] in err
    assert not (tmp_path / "d").exists() and not staging_dir(tmp_path / "d").exists()
    # a quantized weight without its scale
    del arrays[n]
    (fp8 / "model.safetensors").unlink()
    write_file(fp8 / "model.safetensors", [Entry(k, dt[k], a.shape, lambda a=a: a) for k, a in arrays.items()])
    assert "has no scale tensor" in _cli_error(capsys, ["dequant", str(fp8), str(tmp_path / "d")])


def test_nonfinite_weights(tmp_path, rng):
    t = tiny_llama(rng, layers=1)
    t["model.layers.0.self_attn.q_proj.weight"][3, 200] = np.inf
    src = write_dense(tmp_path / "src", t)
    with pytest.raises(NonFiniteError, match=r"q_proj.*\(3, 200\)"):
        convert(src, tmp_path / "out", preset="deepseek-v3.1")
    assert not (tmp_path / "out").exists() and not staging_dir(tmp_path / "out").exists()
    convert(src, tmp_path / "z", preset="deepseek-v3.1", nonfinite="zero")
    convert(src, tmp_path / "k", preset="mxfp8", nonfinite="keep")
    s = Checkpoint.open(tmp_path / "k").read("model.layers.0.self_attn.q_proj.weight_scale")
    assert s.view(np.uint8)[3, 200 // 32] == 0xFF  # the block with Inf gets the NaN scale


def test_failed_run_leaves_nothing_visible(dense, tmp_path):
    src, _ = dense
    with pytest.raises(UnknownNameError):
        convert(src, tmp_path / "out", preset="deepseek-v3.1", nonfinite="sometimes")
    assert not (tmp_path / "out").exists()


def test_tied_lm_head_is_ignored_and_subfolders_are_copied(tmp_path, rng):
    t = tiny_llama(rng, layers=1)
    del t["lm_head.weight"]  # tied to the embedding, as in SmolLM2: no tensor, still a Linear
    src = write_dense(tmp_path / "src", t)
    (src / "1_Pooling").mkdir()
    (src / "1_Pooling" / "config.json").write_text('{"word_embedding_dimension": 576}')
    (src / ".cache").mkdir()
    (src / ".cache" / "junk").write_text("not carried")
    convert(src, tmp_path / "ct", preset="deepseek-v3", layout="compressed-tensors")
    cfg = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    assert "lm_head" in cfg["ignore"]
    assert (tmp_path / "ct" / "1_Pooling" / "config.json").read_text() == '{"word_embedding_dimension": 576}'
    assert not (tmp_path / "ct" / ".cache").exists()
