"""The layout registry: detection with reasons, typed refusals, and lossless conversion between layouts."""

import json

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fp8port
from fp8port.checkpoint import Checkpoint, Options, layouts, run
from fp8port.checkpoint.inspect import inspect
from fp8port.checkpoint.layouts import LayoutName
from fp8port.checkpoint.safetensors_io import Entry, write_file
from fp8port.checkpoint.staging import staging_dir
from fp8port.cli.main import main
from fp8port.errors import LayoutError

from .conftest import BF16, tiny_llama, write_dense

W = "model.layers.0.self_attn.q_proj.weight"


def _cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fp8port: error:") and "\n" not in err and "Traceback" not in err
    return err


def _folder(path, tensors: dict[str, tuple[str, np.ndarray]], config=None, files=()):
    """A checkpoint from {name: (safetensors dtype, array)} and a config.json."""
    path.mkdir(parents=True)
    write_file(path / "model.safetensors", [Entry(n, d, a.shape, lambda a=a: a) for n, (d, a) in tensors.items()])
    (path / "config.json").write_text(json.dumps(config or {"architectures": ["LlamaForCausalLM"]}))
    for f in files:
        (path / f).write_text("{}")
    return path


def test_every_name_is_a_module_or_a_typed_refusal(capsys, tmp_path):
    assert {h.name for h in layouts.HANDLERS} == set(LayoutName)
    for name in LayoutName:
        if name in layouts.readable():
            assert layouts.get(name).name is name
        else:  # planned: named at the boundary, refused there
            with pytest.raises(LayoutError, match=f"layout '{name.value}'.*does not read or write yet"):
                layouts.get(name)
    planned = [n.value for n in LayoutName if n not in layouts.readable()]
    if planned:
        src = write_dense(tmp_path / "src", tiny_llama(np.random.default_rng(0), layers=1))
        err = _cli_error(
            capsys, ["convert", str(src), str(tmp_path / "o"), "--preset", "mxfp4", "--layout", planned[0]]
        )
        assert planned[0] in err and "does not read or write yet" in err
        assert not (tmp_path / "o").exists() and not staging_dir(tmp_path / "o").exists()


@pytest.fixture
def fp8(tmp_path):
    src = write_dense(tmp_path / "src", tiny_llama(np.random.default_rng(1), layers=1))
    run(src, tmp_path / "fp8", Options(mode="convert", preset="deepseek-v3.1"), progress=None)
    return tmp_path / "fp8"


def _set_qc(folder, qc, **top):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization_config"] = qc
    cfg.update(top)
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    "qc, names",
    [
        ({"quant_method": "awq", "bits": 4}, ["'awq'", "fp8", "compressed-tensors", "fp8port", "deepseek", "ascend"]),
        ({"bits": 8}, ["no quant_method", "fp8"]),
        (
            {"quant_method": "compressed-tensors", "format": "int-quantized"},
            ["'int-quantized'", "is unknown", "float-quantized"],
        ),
        (
            {"quant_method": "compressed-tensors", "format": "mxfp6-pack-quantized"},
            ["is not read yet", "float-quantized", "nvfp4-pack-quantized"],
        ),
    ],
)
@pytest.mark.parametrize("verb", ["inspect", "dequant", "convert"])
def test_unknown_quant_method_or_format_is_named(fp8, tmp_path, capsys, qc, names, verb):
    _set_qc(fp8, qc)
    argv = [verb, str(fp8)] + ([] if verb == "inspect" else [str(tmp_path / "o")])
    err = _cli_error(capsys, argv + (["--layout", "fp8port"] if verb == "convert" else []))
    assert all(n in err for n in names), err
    assert not (tmp_path / "o").exists()


def _u8(*shape):
    return "U8", np.zeros(shape, np.uint8)


@pytest.mark.parametrize(
    "case, match",
    [
        ("modelopt", "ModelOpt"),
        ("modelopt-hf-quant-config", "ModelOpt"),
        ("weight_scale-no-config", "several layouts|no quantization_config"),
        ("f8-no-config", "no quantization_config to say how it is scaled"),
    ],
)
def test_quantized_looking_folders_are_never_dense(tmp_path, capsys, case, match):
    tensors = {"model.norm.weight": ("BF16", np.ones(8, BF16))}
    config, files = None, ()
    if case.startswith("modelopt"):
        tensors |= {
            "x.weight": _u8(16, 8),
            "x.weight_scale": ("F8_E4M3", np.zeros((16, 1), ml_dtypes.float8_e4m3fn)),
            "x.weight_scale_2": ("F32", np.ones((), np.float32)),
        }
        config = {"quantization_config": {"quant_method": "modelopt"}} if case == "modelopt" else None
        files = ("hf_quant_config.json",) if case == "modelopt-hf-quant-config" else ()
    elif case == "weight_scale-no-config":
        tensors |= {
            "x.weight": ("F8_E4M3", np.zeros((16, 16), ml_dtypes.float8_e4m3fn)),
            "x.weight_scale": ("F32", np.ones((1, 1), np.float32)),
        }
    else:
        tensors |= {"x.weight": ("F8_E4M3", np.zeros((16, 16), ml_dtypes.float8_e4m3fn))}
    folder = _folder(tmp_path / case, tensors, config, files)
    with pytest.raises(LayoutError, match=match):
        layouts.detect(Checkpoint.open(folder))
    assert __import__("re").search(match, _cli_error(capsys, ["inspect", str(folder)]))
    _cli_error(capsys, ["dequant", str(folder), str(tmp_path / "out")])


def test_gguf_is_named_not_misread(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.Q4_1.gguf").write_bytes(b"GGUF")
    for path in (tmp_path / "m", tmp_path / "m" / "model.Q4_1.gguf"):
        assert "GGUF" in _cli_error(capsys, ["inspect", str(path)])


def test_inspect_names_layout_reason_schemes_and_loaders(fp8, tmp_path):
    info = inspect(fp8)
    assert info["layout"] == "deepseek" and "quant_method is 'fp8'" in info["detected_by"]
    assert [g["weights"] for g in info["groups"]] == [4] and info["groups"][0]["block"] == "128x128"
    assert any("transformers" in k for k in info["loaders"]) and any("vLLM" in k for k in info["loaders"])
    run(fp8, tmp_path / "own", Options(mode="convert", layout="fp8port"), progress=None)
    own = inspect(tmp_path / "own")
    assert own["layout"] == "fp8port" and "nothing else loads it" in " ".join(own["loaders"])
    dense = inspect(fp8.parent / "src")
    assert dense["layout"] == "dense" and dense["detected_by"].startswith("no quantization_config")


# ---- convert without --preset: the source's scheme kept, only re-laid out ---------------------


LAYOUTS = ["compressed-tensors", "fp8port", "deepseek"]


def _codes(folder, name=W):
    ck = Checkpoint.open(folder)
    h, _ = layouts.detect(ck)
    return h.read(ck, h.weights(ck)[name])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.integers(1, 300),
    cols=st.integers(1, 300),
    preset=st.sampled_from(["deepseek-v3", "deepseek-v3.1"]),
    e8m0=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_layout_round_trip_is_exact(tmp_path_factory, rows, cols, preset, e8m0, seed):
    """deepseek -> compressed-tensors -> fp8port -> deepseek, ragged shapes included: codes and values kept."""
    rng = np.random.default_rng(seed)
    root = tmp_path_factory.mktemp("rt")
    t = {W: (rng.standard_normal((rows, cols)) * 3).astype(BF16), "model.norm.weight": np.ones(cols, BF16)}
    src = write_dense(root / "src", t)
    e8m0 = e8m0 and preset == "deepseek-v3.1"
    prev = root / "ds"
    run(src, prev, Options(mode="convert", preset=preset, scale_dtype="e8m0" if e8m0 else None), progress=None)
    q0 = _codes(prev)
    for layout in LAYOUTS:
        out = root / layout
        res = run(prev, out, Options(mode="convert", layout=layout), progress=None, verify=True)
        assert res.summary["counts"]["replicate-scales"] == 1 and res.summary["verify"]["ok"]
        assert res.summary["verify"]["tensors"][W]["exact"]
        q = _codes(out)
        assert np.array_equal(q.codes, q0.codes) and np.array_equal(q.scale_fp32, q0.scale_fp32)
        assert Checkpoint.open(out).read("model.norm.weight").tobytes() == t["model.norm.weight"].tobytes()
        prev = out
    assert inspect(prev)["layout"] == "deepseek"


def test_reblock_64x64_is_exact_for_float_and_power_of_two_scales(tmp_path, capsys):
    src = write_dense(tmp_path / "src", tiny_llama(np.random.default_rng(2), layers=1))
    for preset in ("deepseek-v3", "deepseek-v3.1"):
        run(src, tmp_path / preset, Options(mode="convert", preset=preset), progress=None)
        out = tmp_path / f"{preset}-64"
        assert main(["convert", str(tmp_path / preset), str(out), "--block", "64x64", "--verify", "--json", "-q"]) == 0
        s = json.loads(capsys.readouterr().out)
        assert s["verify"]["ok"] and all(t["exact"] for t in s["verify"]["tensors"].values())
        assert json.loads((out / "config.json").read_text())["quantization_config"]["weight_block_size"] == [64, 64]
        assert Checkpoint.open(out).info(W[:-6] + "weight_scale_inv").shape == (9, 9)  # 576 = 9 x 64
        assert np.array_equal(_codes(out).codes, _codes(tmp_path / preset).codes)
        assert fp8port.checkpoint.diff.diff(tmp_path / preset, out)["identical"]
    # blocks that do not nest: requantized from the exact values, the added error reported
    res = run(
        tmp_path / "deepseek-v3", tmp_path / "96", Options(mode="convert", block="96x96"), progress=None, verify=True
    )
    assert res.summary["counts"]["requantize"] == 4
    assert all(25 < t["sqnr_db"] < 60 for t in res.summary["tensors"].values() if t["action"] == "requantize")
    with pytest.raises(fp8port.errors.Fp8portError, match="cannot hold"):
        run(
            tmp_path / "deepseek-v3",
            tmp_path / "bad",
            Options(mode="convert", block="1x32", layout="deepseek"),
            progress=None,
        )
    assert not (tmp_path / "bad").exists()


def test_what_a_layout_cannot_hold_names_the_layouts_that_can(tmp_path, capsys):
    src = write_dense(tmp_path / "src", tiny_llama(np.random.default_rng(3), layers=1))
    err = _cli_error(capsys, ["convert", str(src), str(tmp_path / "o"), "--preset", "mxfp4", "--layout", "deepseek"])
    assert "deepseek layout cannot hold mxfp4/weight" in err
    assert "layouts that hold it: compressed-tensors, fp8port" in err
    run(src, tmp_path / "hif8", Options(mode="convert", preset="hif8"), progress=None)
    err = _cli_error(capsys, ["convert", str(tmp_path / "hif8"), str(tmp_path / "o"), "--layout", "compressed-tensors"])
    assert "hold FP8 E4M3, NVFP4 and MXFP4" in err and "layouts that hold it: fp8port" in err
    # MXFP8 (E8M0 1x32) is compressed-tensors' mxfp8-quantized: codes and scale bytes kept; with
    # --scale-dtype f32 it is float-quantized group 32, the E8M0 bytes as exact F32 multipliers
    run(src, tmp_path / "mx8", Options(mode="convert", preset="mxfp8"), progress=None)
    for dtype, fmt, group in ((None, "mxfp8-quantized", "MXFP8A16"), ("f32", "float-quantized", "group_0")):
        out = tmp_path / f"ct-{fmt}"
        res = run(
            tmp_path / "mx8",
            out,
            Options(mode="convert", layout="compressed-tensors", scale_dtype=dtype),
            progress=None,
            verify=True,
        )
        assert res.summary["verify"]["ok"] and res.summary["counts"]["replicate-scales"] == 4
        qc = json.loads((out / "config.json").read_text())["quantization_config"]
        assert qc["format"] == fmt
        assert qc["config_groups"][group]["weights"]["strategy"] == "group"
        assert qc["config_groups"][group]["weights"]["group_size"] == 32
    err = _cli_error(capsys, ["convert", str(src), str(tmp_path / "o"), "--layout", "deepseek"])
    assert "needs --preset" in err
