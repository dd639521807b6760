"""gpt-oss's MXFP4 layout, proven by transformers' own MXFP4 integration (Mxfp4Config(dequantize=True)):
it reads what we write with logits equal to ours, and we read what it reads with its values, bit for bit."""

import json

import ml_dtypes
import numpy as np
import pytest

from fp8port import quantize
from fp8port.checkpoint import Checkpoint, Options, layouts, run
from fp8port.checkpoint.inspect import inspect
from fp8port.checkpoint.staging import staging_dir
from fp8port.cli.main import main
from fp8port.codec.packing import unpack
from fp8port.errors import CheckpointError
from fp8port.quant import get_preset
from fp8port.quant.scheme import BlockShape

from .conftest import gpt_oss_folder, tiny_llama, tree_digest, write_dense

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
EXPERTS = "model.layers.0.mlp.experts."


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A dense tiny GptOss, and the same model written by us in gpt-oss's layout (--preset mxfp4)."""
    root = tmp_path_factory.mktemp("gpt-oss")
    dense = gpt_oss_folder(root / "dense")
    before = tree_digest(dense)
    res = run(dense, root / "go", Options(mode="convert", preset="mxfp4", layout="gpt-oss"), progress=None, verify=True)
    assert res.summary["verify"]["ok"] and res.summary["counts"]["quantize"] == 4  # 2 layers x 2 expert tensors
    assert tree_digest(dense) == before
    return root, torch.tensor([[1, 5, 9, 22, 7, 3, 100, 64, 17]])


def _theirs(folder):
    return transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.bfloat16, quantization_config=transformers.Mxfp4Config(dequantize=True)
    )


def test_transformers_loads_ours_with_our_logits(written):
    from fp8port.nn import QuantizedExperts, load_quantized, resident_bytes

    root, ids = written
    theirs, ours = _theirs(root / "go"), load_quantized(root / "go")
    for lt, lo in zip(theirs.model.layers, ours.model.layers):
        for p in ("gate_up_proj", "down_proj"):
            mine = getattr(lo.mlp.experts, p)
            assert isinstance(mine, QuantizedExperts)
            assert torch.equal(getattr(lt.mlp.experts, p), torch.stack([mine[i] for i in range(len(mine))]))
    run(root / "go", root / "deq", Options(mode="dequant", dtype="bf16"), progress=None, verify=True)
    deq = transformers.AutoModelForCausalLM.from_pretrained(root / "deq", dtype=torch.bfloat16)
    with torch.inference_mode():
        want = theirs(ids).logits
        assert torch.equal(ours(ids).logits, want)  # our QuantizedExperts, eager experts loop
        assert torch.equal(deq(ids).logits, want)  # our dequantized dense folder, transformers' default kernels
    experts = sum(m.resident_bytes() for m in ours.modules() if isinstance(m, QuantizedExperts))
    assert experts == resident_bytes(ours)["fp8_layers"] < 0.35 * 2 * 4 * 64 * 192 * 2  # vs bf16 experts


def test_blocks_hold_the_presets_codes_in_gpt_oss_order(written):
    """[E, H, 2I] quantized in 1x32 blocks along H; on disk each of the 2I rows is LOW_FIRST codes + E8M0 bytes."""
    root, _ = written
    dense, go = Checkpoint.open(root / "dense"), Checkpoint.open(root / "go")
    for proj in ("gate_up_proj", "down_proj"):
        x = dense.read(EXPERTS + proj).astype(np.float32)
        q = quantize(x, get_preset("mxfp4").weight.with_(block=BlockShape.parse("1x32", axis=-2)))
        blocks, scales = go.read(EXPERTS + proj + "_blocks"), go.read(EXPERTS + proj + "_scales")
        e, n, g, b = blocks.shape
        assert (e, g * 32, n) == x.shape and b == 16 and scales.dtype == np.uint8
        assert np.array_equal(unpack(blocks.reshape(e, n, g * b), "float4_e2m1fn"), q.codes.transpose(0, 2, 1))
        assert np.array_equal(scales, np.asarray(q.scale).view(np.uint8).transpose(0, 2, 1))
    assert go.read(EXPERTS + "gate_up_proj_bias").tobytes() == dense.read(EXPERTS + "gate_up_proj_bias").tobytes()
    qc = json.loads((root / "go" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "mxfp4" and "model.layers.*.mlp.router" in qc["modules_to_not_convert"]


def test_we_read_transformers_gpt_oss_as_it_dequantizes():
    """oracles.gpt_oss_mxfp4: random blocks and scales (E8M0 extremes 0 and 254 included), dequantized by
    transformers' own MXFP4 integration; our values in bf16 equal it bit for bit, -0 included."""
    from tests.peers import oracles

    folder = oracles.gpt_oss_mxfp4()
    ck = Checkpoint.open(folder)
    h, why = layouts.detect(ck)
    assert h.name.value == "gpt-oss" and "'mxfp4'" in why
    theirs = oracles.load_numpy(folder / oracles.DEQUANT)
    weights = h.weights(ck)
    assert sorted(weights) == [EXPERTS + "down_proj", EXPERTS + "gate_up_proj"]
    for name, w in weights.items():
        with np.errstate(over="ignore"):
            ours = h.values(ck, w, "bfloat16")
        assert oracles.bits_equal(ours, theirs[name])


def test_round_trips_through_fp8port_keep_every_byte(tmp_path):
    from tests.peers import oracles

    folder = oracles.gpt_oss_mxfp4()
    run(folder, tmp_path / "own", Options(mode="convert", layout="fp8port"), progress=None, verify=True)
    res = run(
        tmp_path / "own", tmp_path / "back", Options(mode="convert", layout="gpt-oss"), progress=None, verify=True
    )
    assert res.summary["verify"]["ok"] and res.summary["counts"]["replicate-scales"] == 2
    src, back = Checkpoint.open(folder), Checkpoint.open(tmp_path / "back")
    assert set(src.tensors) == set(back.tensors)
    assert all(src.read(n).tobytes() == back.read(n).tobytes() for n in src.tensors)


def test_a_dense_model_has_nothing_gpt_oss_holds(tmp_path, capsys):
    src = write_dense(tmp_path / "src", tiny_llama(np.random.default_rng(0), layers=1))
    assert main(["convert", str(src), str(tmp_path / "o"), "--preset", "mxfp4", "--layout", "gpt-oss"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds only MoE experts" in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "o").exists() and not staging_dir(tmp_path / "o").exists()
    with pytest.raises(Exception, match="cannot hold nvfp4"):  # and experts it cannot hold are named
        run(
            gpt_oss_folder(tmp_path / "g", layers=1),
            tmp_path / "n",
            Options(mode="convert", preset="nvfp4", layout="gpt-oss"),
            progress=None,
        )


def test_inspect_names_layout_scheme_and_loaders(written):
    root, _ = written
    info = inspect(root / "go")
    assert info["layout"] == "gpt-oss" and info["preset"] is None  # OpenAI's rule is not published
    [g] = info["groups"]
    assert (g["element"], g["block"], g["scale_storage"], g["weights"]) == ("float4_e2m1fn", "1x32(axis=-2)", "e8m0", 4)
    assert all(any(name in k for k in info["loaders"]) for name in ("transformers", "vLLM", "SGLang", "llama.cpp"))
    assert any("interleaved" in w for w in info["warnings"])


@pytest.mark.parametrize(
    "case, match",
    [
        ("no-scales", "have no scales"),
        ("no-blocks", "have no blocks"),
        ("rank", "gpt-oss blocks are U8"),
        ("grid", "need \\[2, 8, 2\\]"),
        ("dtype", "scales are U8"),
    ],
)
def test_broken_folders_are_typed_errors_naming_the_tensor(tmp_path, case, match):
    from fp8port.checkpoint.safetensors_io import Entry, write_file

    t = {
        EXPERTS + "down_proj_blocks": np.zeros((2, 8, 2, 16), np.uint8),
        EXPERTS + "down_proj_scales": np.full((2, 8, 2), 127, np.uint8),
    }
    if case == "no-scales":
        del t[EXPERTS + "down_proj_scales"]
    elif case == "no-blocks":
        del t[EXPERTS + "down_proj_blocks"]
    elif case == "rank":
        t[EXPERTS + "down_proj_blocks"] = np.zeros((16, 2, 16), np.uint8)
    elif case == "grid":
        t[EXPERTS + "down_proj_scales"] = np.full((2, 8, 3), 127, np.uint8)
    else:
        t[EXPERTS + "down_proj_scales"] = np.ones((2, 8, 2), ml_dtypes.bfloat16)
    dtypes = {np.dtype(np.uint8): "U8", np.dtype(ml_dtypes.bfloat16): "BF16"}
    (tmp_path / "f").mkdir()
    write_file(
        tmp_path / "f" / "model.safetensors", [Entry(n, dtypes[a.dtype], a.shape, lambda a=a: a) for n, a in t.items()]
    )
    (tmp_path / "f" / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "mxfp4"}}))
    ck = Checkpoint.open(tmp_path / "f")
    with pytest.raises(CheckpointError, match=match):
        layouts.detect(ck)[0].weights(ck)
