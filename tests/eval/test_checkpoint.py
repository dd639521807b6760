"""fp8port eval of a checkpoint: as stored and as each engine holds it, equal to the same transform applied
by hand (rescale --to ENGINE, then eval); every readable layout evaluated or refused with one line."""

import json
import re

import numpy as np
import pytest

from fp8port.checkpoint import Options, layouts, run
from fp8port.checkpoint.folder import Checkpoint
from fp8port.cli.main import main
from fp8port.errors import ConversionError
from tests.peers.oracles import smollm2_layers

from ..checkpoint.conftest import gpt_oss_folder
from .conftest import ALL_ENGINES, EVAL, save_tokenizer, tiny_lm

pytest.importorskip("transformers")
FIGURES = ("ppl", "kl", "top1", "weight_sqnr_db")


def _error_lines(err: str) -> list[str]:
    """The error lines of stderr (progress lines are `fp8port eval: ...`), checked free of tracebacks."""
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("fp8port: ")]


def _row(report, name):
    return next(r for r in report["rows"] if r["preset"] == name)


def test_the_report(tiny_report):
    d, out = tiny_report
    assert [r["preset"] for r in d["rows"]] == [
        "as stored",
        "vllm-sm100",
        "sglang-sm100",
        "vllm-ascend-950",
        "vllm-ascend-a2",
        "gguf-q8_0",
    ]
    assert len(d["layers"]) == 14 and d["reference"]["label"] == "unquantized (BF16)"
    sec = {s["engine"]: s for s in d["checkpoint"]["engines"]}
    assert sec["vllm-sm100"]["counts"] == {"keep": 2, "requantize": 12, "dequantize": 0, "fail": 0}  # down_proj K=192
    assert sec["vllm-ascend-950"]["counts"]["requantize"] == 14
    tf = sec["transformers-cpu"]
    assert tf["status"] == "no figures" and tf["counts"] == {"keep": 0, "requantize": 0, "dequantize": 8, "fail": 6}
    assert re.match(
        r"model\.layers\.0\.mlp\.\w+_proj\.weight: Weight shape \((320, 128|128, 320)\) not divisible by "
        r"scale grid",
        tf["message"],
    )
    stored, a2 = _row(d, "as stored"), _row(d, "vllm-ascend-a2")
    assert 0 < stored["kl"] and stored["weight_sqnr_db"] > 25
    assert stored["weight_sqnr_db"] - 0.5 < a2["weight_sqnr_db"] < stored["weight_sqnr_db"]  # bf16 rounding
    assert _row(d, "vllm-ascend-950")["weight_sqnr_db"] < stored["weight_sqnr_db"] - 1
    changed = d["layer_stats"]["vllm-sm100"]["changed"]
    assert [c > 0 for c in changed] == [n.endswith("down_proj") is False for n in d["layers"]]
    assert max(d["layer_stats"]["as stored"]["changed"]) == 0
    assert sec["vllm-sm100"]["worst"][0]["sqnr_db"] <= sec["vllm-sm100"]["worst"][-1]["sqnr_db"] + 5
    assert json.loads((out / "report.json").read_text()) == d


def test_engine_figures_equal_the_transform_applied_by_hand(tiny, tiny_report, tmp_path):
    """`eval --as E` equals `rescale --to E` then `eval` of the result, number for number; and the by-hand
    outputs of the Ascend transforms equal fp8port's own dequant / convert, byte for byte."""
    from fp8port.eval.checkpoint import evaluate_checkpoint

    dense, v3 = tiny
    d, _ = tiny_report
    with pytest.raises(ConversionError, match="transformers-cpu does not load .*not divisible by scale grid"):
        run(v3, tmp_path / "tf", Options(mode="rescale", to="transformers-cpu"), progress=None)
    assert not (tmp_path / "tf").exists()
    for name in ALL_ENGINES.replace("transformers-cpu,", "").split(","):
        run(v3, tmp_path / name, Options(mode="rescale", to=name), progress=None)
        by_hand = evaluate_checkpoint(tmp_path / name, reference=dense, **EVAL)
        assert {k: _row(by_hand, "as stored")[k] for k in FIGURES} == {k: _row(d, name)[k] for k in FIGURES}, name
        assert by_hand["layer_stats"]["as stored"]["sqnr_db"] == d["layer_stats"][name]["sqnr_db"], name
    run(v3, tmp_path / "deq", Options(mode="dequant", dtype="bf16"), progress=None)
    a2, deq = Checkpoint.open(tmp_path / "vllm-ascend-a2"), Checkpoint.open(tmp_path / "deq")
    assert all(np.array_equal(a2.read(n).view(np.uint16), deq.read(n).view(np.uint16)) for n in deq.tensors)
    run(tmp_path / "deq", tmp_path / "mx", Options(mode="convert", preset="mxfp8"), progress=None)
    a950, mx = Checkpoint.open(tmp_path / "vllm-ascend-950"), Checkpoint.open(tmp_path / "mx")
    assert all(np.array_equal(a950.read(n).view(np.uint8), mx.read(n).view(np.uint8)) for n in mx.tensors)


def test_same_numbers_again(tiny, tiny_report, tmp_path, capsys):
    dense, v3 = tiny
    args = [
        "eval",
        str(v3),
        "--reference",
        str(dense),
        "--as",
        ALL_ENGINES,
        "--max-tokens",
        "48",
        "--seq-len",
        "16",
        "--sensitivity-layers",
        "2",
        "--json",
    ]
    assert main(args) == 0
    assert json.dumps(json.loads(capsys.readouterr().out), sort_keys=True) == json.dumps(tiny_report[0], sort_keys=True)


def _build(layout, dense, dst):
    """A checkpoint of a tiny model in `layout` (every layout the registry reads needs an entry)."""
    kw = {
        "deepseek": dict(preset="deepseek-v3.1"),
        "compressed-tensors": dict(preset="deepseek-v3"),
        "fp8port": dict(preset="mxfp4"),
        "ascend": dict(preset="W8A8_MXFP8"),
        "deepseek-v4": {},
        "gpt-oss": dict(preset="mxfp4"),
        "modelopt": dict(preset="nvfp4"),
        "gguf": dict(preset=None, type="q8_0"),
    }
    if layout == "dense":
        return dense
    if layout not in kw:
        pytest.fail(f"layout {layout!r} is readable: add how to write a tiny checkpoint in it to _build")
    if layout == "gguf":  # one .gguf file; llama.cpp needs a byte-level BPE tokenizer: SmolLM2's first two layers
        dense, dst = smollm2_layers(2), dst.with_suffix(".gguf")
    if layout == "gpt-oss":  # it holds MoE experts only
        dense = save_tokenizer(gpt_oss_folder(dst.with_name("gpt-oss-bf16")))
    run(dense, dst, Options(mode="convert", layout=layout, **{"preset": "deepseek-v3.1", **kw[layout]}), progress=None)
    return dst


@pytest.mark.parametrize("layout", [n.value for n in layouts.readable()])
def test_every_readable_layout_evaluates_or_gives_one_line(layout, tiny, tmp_path, capsys):
    ckpt = _build(layout, tiny[0], tmp_path / layout)
    capsys.readouterr()  # the build's progress lines
    small = ["--max-tokens", "32", "--seq-len", "16", "--sensitivity-layers", "1", "--json"]
    extra = ["--presets", "deepseek-v3.1", "--modes", "weight-only"] if layout == "dense" else ["--as", ALL_ENGINES]
    rc = main(["eval", str(ckpt), *extra, *small])
    out, err = capsys.readouterr()
    assert rc in (0, 2) and "Traceback" not in err
    if rc == 2:
        assert len(_error_lines(err)) == 1 and _error_lines(err)[0].startswith("fp8port: error: ")
        if layout == "gguf":
            assert "converting from GGUF is not supported" in err
    else:
        d = json.loads(out)
        assert d["rows"] and all(np.isfinite(r["ppl"]) for r in d["rows"])
        sections = (d["checkpoint"] or {}).get("engines", []) if layout != "dense" else []
        assert len(sections) == (0 if layout == "dense" else 6)
        if layout in ("gpt-oss", "fp8port"):  # MXFP4 (experts): no engine here is modelled for it
            assert all(s["status"] == "no figures" for s in sections)


@pytest.mark.parametrize(
    "args, message",
    [
        (lambda d, q: [q, "--reference", q], "is a deepseek checkpoint where a dense model is needed"),
        (lambda d, q: [q + "-missing", "--as", "vllm-sm100"], "-missing"),
        (lambda d, q: [d, "--as", "vllm-sm100"], "--as evaluates how engines load a quantized checkpoint"),
        (lambda d, q: [q, "--as", "vllm-h100"], "unknown engine 'vllm-h100'; valid: gguf-q8_0"),
        (lambda d, q: [q, "--presets", "mxfp8"], "--presets applies to a dense model"),
        (lambda d, q: [q, "--reference", d + "-other"], "does not match"),
    ],
)
def test_user_errors_are_one_line(tiny, tmp_path_factory, args, message, capsys):
    dense, v3 = tiny
    other = dense.parent / "bf16-other"
    if not other.exists():
        tiny_lm(other, hidden=64)  # another model: its linears do not fit the checkpoint's
    assert main(["eval", *args(str(dense), str(v3)), "--max-tokens", "16", "--seq-len", "16"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("fp8port: error: ") and message in lines[0], lines


def test_inspect_says_what_each_engine_does(tiny, capsys):
    assert main(["inspect", str(tiny[1])]) == 0
    out = capsys.readouterr().out
    assert "vllm-sm100: transforms the weights when loading (2 keep, 12 requantize)" in out
    assert "vllm-ascend-a2: transforms the weights when loading (14 dequantize)" in out
    assert re.search(
        r"transformers-cpu: model\.layers\.0\.mlp\.\w+_proj\.weight: Weight shape \(\d+, \d+\) not "
        r"divisible by scale grid",
        out,
    )
    assert main(["inspect", str(tiny[1]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert not info["engines"]["transformers-cpu"]["loads"] and info["engines"]["vllm-sm100"]["transforms"]


@pytest.mark.slow
def test_smollm2_deepseek_v3_as_engines_equals_rescale_by_hand(tmp_path, capsys):
    """The issue's check: SmolLM2 as deepseek-v3 (float32 scales), `eval --reference --as vllm-sm100,
    vllm-ascend-950,vllm-ascend-a2`; each engine's figures equal `rescale --to ENGINE` then `eval`."""
    from fp8port.models import smollm2

    dense = smollm2()
    v3 = tmp_path / "v3"
    run(dense, v3, Options(mode="convert", preset="deepseek-v3"), progress=None)
    small = ["--reference", str(dense), "--max-tokens", "32", "--seq-len", "32", "--sensitivity-layers", "0", "--json"]
    names = ["vllm-sm100", "vllm-ascend-950", "vllm-ascend-a2"]
    assert main(["eval", str(v3), "--as", ",".join(names), *small]) == 0
    d = json.loads(capsys.readouterr().out)
    stored = _row(d, "as stored")
    for name in names:
        run(v3, tmp_path / name, Options(mode="rescale", to=name), progress=None)
        assert main(["eval", str(tmp_path / name), *small]) == 0
        by_hand = json.loads(capsys.readouterr().out)
        assert {k: _row(by_hand, "as stored")[k] for k in FIGURES} == {k: _row(d, name)[k] for k in FIGURES}, name
        assert _row(d, name)["kl"] >= stored["kl"] * 0.5  # an engine row, not the stored one again
    sec = {s["engine"]: s for s in d["checkpoint"]["engines"]}
    assert sec["vllm-sm100"]["counts"]["requantize"] == 30  # the 30 down_proj (576 x 1536): N % 64, K % 128
    assert _row(d, "vllm-ascend-950")["kl"] > 2 * stored["kl"]
