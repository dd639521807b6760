"""DeepSeek-V4's layout against the transcription of DeepSeek's own code (tests/peers/deepseek_v4.py,
source commits cited there): our reading equals its FP4 / FP8 dequantization bit for bit, our FP4 -> FP8
widening equals its converter's bytes; conversions to and from V3.1 and fp8port keep every value."""

import json

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fp8port.checkpoint import Checkpoint, Options, layouts, run
from fp8port.checkpoint.inspect import inspect
from fp8port.checkpoint.safetensors_io import Entry, write_file
from fp8port.codec.packing import pack
from fp8port.errors import Fp8portError, LayoutError
from fp8port.quant import QuantizedTensor, Role, Scheme
from fp8port.quant.fp4_to_fp8 import fp4_to_fp8
from fp8port.quant.relayout import widen, widened
from fp8port.quant.storage import e8m0_values
from fp8port.quant.tensor import Framework

from .conftest import BF16, tiny_llama, tree_digest, write_dense

torch = pytest.importorskip("torch")
from tests.peers import deepseek_v4 as ds  # noqa: E402

E8M0 = ml_dtypes.float8_e8m0fnu
FP8 = {
    "layers.0.attn.wq_a": (256, 384),
    "layers.0.attn.wo_a": (192, 320),  # ragged: ceil grid 2x3
    "layers.0.ffn.shared_experts.w1": (128, 256),
}
FP4 = {"w1": (128, 256), "w2": (256, 128), "w3": (128, 256)}
CONFIG = {
    "architectures": ["DeepseekV4ForCausalLM"],
    "model_type": "deepseek_v4",
    "expert_dtype": "fp4",
    "torch_dtype": "bfloat16",
    "quantization_config": {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "scale_fmt": "ue8m0",
        "weight_block_size": [128, 128],
    },
}


def v4_folder(path, seed=0, experts=2, spread=(118, 131), config=CONFIG, base=False):
    """A tiny DeepSeek-V4-shaped checkpoint: native names, FP8 + E8M0 128x128, FP4 experts I8 + E8M0 1x32;
    base: as the -Base models, every weight FP8 with F32 scales (experts too)."""
    rng = np.random.default_rng(seed)
    t = {"embed.weight": ("BF16", rng.standard_normal((16, 256)).astype(BF16))}

    def fp8(name, n, k):
        codes = rng.integers(0, 256, (n, k), dtype=np.uint8)
        codes[(codes & 0x7F) == 0x7F] = 0  # no NaN codes
        t[name + ".weight"] = ("F8_E4M3", codes.view(ml_dtypes.float8_e4m3fn))
        b = rng.integers(110, 135, (-(-n // 128), -(-k // 128)), dtype=np.uint8)
        t[name + ".scale"] = ("F32", e8m0_values(b)) if base else ("F8_E8M0", b.view(E8M0))

    for name, (n, k) in FP8.items():
        fp8(name, n, k)
    for e in range(experts):
        for w, (n, k) in FP4.items():
            name = f"layers.0.ffn.experts.{e}.{w}"
            if base:
                fp8(name, n, k)
                continue
            t[name + ".weight"] = (
                "I8",
                pack(rng.integers(0, 16, (n, k), dtype=np.uint8), "float4_e2m1fn").view(np.int8),
            )
            t[name + ".scale"] = ("F8_E8M0", rng.integers(*spread, (n, k // 32), dtype=np.uint8).view(E8M0))
    t["layers.0.ffn.gate.weight"] = ("BF16", rng.standard_normal((experts, 256)).astype(BF16))
    path.mkdir(parents=True)
    write_file(
        path / "model.safetensors", [Entry(n, d, a.shape, lambda a=a: a) for n, (d, a) in t.items()], {"format": "pt"}
    )
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    return path


def _torch(ck, name):
    a = ck.read(name)
    if ck.info(name).dtype == "F32":
        return torch.from_numpy(a)
    return torch.from_numpy(np.ascontiguousarray(a).view(np.uint8)).view(
        {"I8": torch.int8, "F8_E8M0": torch.float8_e8m0fnu, "F8_E4M3": torch.float8_e4m3fn}[ck.info(name).dtype]
    )


def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


@pytest.mark.parametrize("base", [False, True])
def test_reading_equals_deepseeks_own_dequantization(tmp_path, base):
    """V4-Flash / -Pro (FP4 experts, E8M0 scales) and -Base (all FP8, F32 scales, no expert_dtype)."""
    config = {k: v for k, v in CONFIG.items() if k != "expert_dtype"} if base else CONFIG
    ck = Checkpoint.open(v4_folder(tmp_path / "v4", config=config, base=base))
    h, why = layouts.detect(ck)
    assert h.name.value == "deepseek-v4" and ("X.scale" if base else "expert_dtype 'fp4'") in why
    weights = h.weights(ck)
    assert len(weights) == 3 + 2 * 3
    for name, w in weights.items():
        scale = name[: -len("weight")] + "scale"
        if ".experts." in name and not base:
            theirs = ds.dequantize_fp4(_torch(ck, name), _torch(ck, scale))  # model.py: fp4 table, code 8 is +0
        else:
            theirs = ds.dequantize_fp8(_torch(ck, name), _torch(ck, scale))
        assert np.array_equal(_bits(h.values(ck, w)), _bits(theirs.numpy())), name
    info = inspect(ck.root)
    assert info["preset"] == ("deepseek-v3.1" if base else "deepseek-v4")
    assert any("expert_dtype None" in w for w in info["warnings"]) is base  # vLLM would take FP8 experts for FP4


@pytest.mark.parametrize("form", ["expert_dtype", "scale-names", "no-config"])
def test_detected_by_config_or_tensor_names(tmp_path, form):
    config = None if form == "no-config" else dict(CONFIG)
    if form == "scale-names":
        config.pop("expert_dtype")
    ck = Checkpoint.open(v4_folder(tmp_path / "v4", config=config))
    h, why = layouts.detect(ck)
    assert h.name.value == "deepseek-v4", why
    assert {"expert_dtype": "expert_dtype", "scale-names": "X.scale", "no-config": "F8_E8M0 tensors"}[form] in why


def test_unknown_expert_dtype_is_named(tmp_path):
    with pytest.raises(LayoutError, match="expert_dtype 'fp6' is not read"):
        layouts.detect(Checkpoint.open(v4_folder(tmp_path / "v4", config={**CONFIG, "expert_dtype": "fp6"})))


def test_to_deepseek_widens_fp4_experts_with_deepseeks_bytes(tmp_path):
    src = v4_folder(tmp_path / "v4")
    before = tree_digest(src)
    res = run(src, tmp_path / "v3", Options(mode="convert", layout="deepseek"), progress=None, verify=True)
    assert tree_digest(src) == before
    s = res.summary
    assert s["verify"]["ok"] and s["counts"]["fp4-to-fp8"] == 6 and s["counts"]["replicate-scales"] == 3
    assert all(t["lossless"] and t["exact"] for t in s["tensors"].values() if t["action"] == "fp4-to-fp8")
    a, b = Checkpoint.open(src), Checkpoint.open(tmp_path / "v3")
    for name in a.tensors:
        if ".experts." in name and name.endswith(".weight"):
            w8, s8 = ds.cast_fp4_to_fp8(_torch(a, name), _torch(a, name[:-6] + "scale"))
            assert b.read(name).view(np.uint8).tobytes() == w8.view(torch.uint8).numpy().tobytes()
            assert (
                b.read(name[:-6] + "weight_scale_inv").view(np.uint8).tobytes()
                == s8.view(torch.uint8).numpy().tobytes()
            )
    info = inspect(tmp_path / "v3")
    assert info["layout"] == "deepseek" and "expert_dtype" not in json.loads(
        (tmp_path / "v3" / "config.json").read_text()
    )


def test_lossy_tiles_are_reported_not_refused(tmp_path):
    """Experts whose 1x32 scales span 30 binades in a tile: DeepSeek's cast loses the smallest values; the
    bytes still equal its converter's, `lossless` is false with the SQNR, and --verify accepts it."""
    src = v4_folder(tmp_path / "v4", spread=(100, 131))
    res = run(src, tmp_path / "v3", Options(mode="convert", layout="deepseek"), progress=None, verify=True)
    widened_ = [t for t in res.summary["tensors"].values() if t["action"] == "fp4-to-fp8"]
    assert res.summary["verify"]["ok"] and not any(t["lossless"] for t in widened_)
    assert all(t["sqnr_db"] > 40 for t in widened_)
    a, b = Checkpoint.open(src), Checkpoint.open(tmp_path / "v3")
    name = "layers.0.ffn.experts.1.w2.weight"
    w8, _ = ds.cast_fp4_to_fp8(_torch(a, name), _torch(a, name[:-6] + "scale"))
    assert b.read(name).view(np.uint8).tobytes() == w8.view(torch.uint8).numpy().tobytes()


def test_fp8port_round_trip_and_64x64_reblocking_are_exact(tmp_path):
    src = v4_folder(tmp_path / "v4")
    run(src, tmp_path / "own", Options(mode="convert", layout="fp8port"), progress=None, verify=True)
    run(tmp_path / "own", tmp_path / "back", Options(mode="convert", layout="deepseek-v4"), progress=None, verify=True)
    a, b = Checkpoint.open(src), Checkpoint.open(tmp_path / "back")
    assert set(a.tensors) == set(b.tensors) and all(a.read(n).tobytes() == b.read(n).tobytes() for n in a.tensors)
    assert json.loads((tmp_path / "back" / "config.json").read_text()) == CONFIG
    # --block 64x64 re-blocks the FP8 parts exactly (scales replicated) and leaves the FP4 experts alone
    res = run(src, tmp_path / "64", Options(mode="convert", block="64x64"), progress=None, verify=True)
    assert res.summary["verify"]["ok"] and res.summary["counts"]["replicate-scales"] == 9
    c = Checkpoint.open(tmp_path / "64")
    assert c.info("layers.0.attn.wo_a.scale").shape == (3, 5)  # 192 x 320 in 64x64
    assert json.loads((tmp_path / "64" / "config.json").read_text())["quantization_config"]["weight_block_size"] == [
        64,
        64,
    ]
    for n in a.tensors:
        if ".experts." in n or n.endswith(".weight"):
            assert a.read(n).tobytes() == c.read(n).tobytes(), n


def _moe_v31(root):
    """tiny_llama plus two routed experts (HF names) as DeepSeek-V3.1 FP8 (F32 power-of-two scales)."""
    rng = np.random.default_rng(4)
    t = tiny_llama(rng, hidden=256, inter=256, layers=1, vocab=16)
    for e in range(2):
        t[f"model.layers.0.mlp.experts.{e}.gate_proj.weight"] = rng.standard_normal((256, 256)).astype(BF16)
    src = write_dense(root / "bf16", t)
    run(src, root / "v31", Options(mode="convert", preset="deepseek-v3.1"), progress=None)
    return root / "v31"


def test_v31_to_v4_keeps_fp8_and_asks_fp4_by_preset(tmp_path):
    v31 = _moe_v31(tmp_path)
    res = run(v31, tmp_path / "v4", Options(mode="convert", layout="deepseek-v4"), progress=None, verify=True)
    assert res.summary["verify"]["ok"] and res.summary["counts"]["replicate-scales"] == 6
    cfg = json.loads((tmp_path / "v4" / "config.json").read_text())
    assert cfg["expert_dtype"] == "fp8" and inspect(tmp_path / "v4")["layout"] == "deepseek-v4"
    assert Checkpoint.open(tmp_path / "v4").info("model.layers.0.mlp.experts.0.gate_proj.scale").dtype == "F32"  # -Base
    back = run(
        tmp_path / "v4",
        tmp_path / "v31b",
        Options(mode="convert", layout="deepseek", scale_dtype="f32"),
        progress=None,
        verify=True,
    )
    assert back.summary["verify"]["ok"]
    a, b = Checkpoint.open(v31), Checkpoint.open(tmp_path / "v31b")
    assert all(a.read(n).tobytes() == b.read(n).tobytes() for n in a.tensors)
    # --preset deepseek-v4: routed experts requantized to MXFP4 (SQNR reported), the rest re-laid out
    res = run(v31, tmp_path / "v4fp4", Options(mode="convert", preset="deepseek-v4"), progress=None, verify=True)
    t = res.summary["tensors"]
    experts = [n for n in t if ".experts." in n]
    assert len(experts) == 2 and all(t[n]["action"] == "requantize" and 5 < t[n]["sqnr_db"] < 30 for n in experts)
    assert res.summary["counts"]["replicate-scales"] == 4 and res.summary["preset"] == "deepseek-v4"
    cfg = json.loads((tmp_path / "v4fp4" / "config.json").read_text())
    out = Checkpoint.open(tmp_path / "v4fp4")
    assert cfg["expert_dtype"] == "fp4" and out.info(experts[0]).dtype == "I8"
    h = layouts.detect(out)[0]
    for name, w in h.weights(out).items():  # DeepSeek's own reading of what we wrote gives our values
        read = ds.dequantize_fp4 if name in experts else ds.dequantize_fp8
        theirs = read(_torch(out, name), _torch(out, name[: -len("weight")] + "scale")).numpy()
        assert np.array_equal(_bits(h.values(out, w)), _bits(theirs)), name
    info = inspect(tmp_path / "v4fp4")
    assert info["preset"] == "deepseek-v4" and {g["kind"] for g in info["groups"]} == {"float8_e4m3fn", "FP4 (E2M1)"}
    assert any("DeepSeek-V4 inference" in k for k in info["loaders"])


def test_fp4_outside_the_routed_experts_is_refused(tmp_path):
    src = write_dense(tmp_path / "src", tiny_llama(np.random.default_rng(0), layers=1))
    run(src, tmp_path / "mx4", Options(mode="convert", preset="mxfp4"), progress=None)
    with pytest.raises(Fp8portError, match="FP4 is for routed experts.*hold it: compressed-tensors, fp8port"):
        run(tmp_path / "mx4", tmp_path / "o", Options(mode="convert", layout="deepseek-v4"), progress=None)
    assert not (tmp_path / "o").exists()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    experts=st.integers(1, 2),
    k=st.sampled_from([128, 256]),
    n=st.sampled_from([128, 256]),
    rows=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_widen_equals_deepseeks_cast_per_expert_in_either_orientation(experts, k, n, rows, seed):
    """widen() on [E, N, K] (blocks along the last axis) or gpt-oss's [E, K, N] (blocks along axis -2)
    gives, per expert, DeepSeek's converter bytes on the [N, K] matrix."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 16, (experts, n, k), dtype=np.uint8)
    sb = rng.integers(100, 140, (experts, n, k // 32), dtype=np.uint8)
    axis = -2 if rows else -1
    c, s = (codes.transpose(0, 2, 1), sb.transpose(0, 2, 1)) if rows else (codes, sb)
    scheme = Scheme.build("float4_e2m1fn", "floor", "1x32", storage="e8m0", axis=axis)
    q = QuantizedTensor(
        np.ascontiguousarray(c),
        np.ascontiguousarray(s).view(E8M0),
        e8m0_values(s),
        c.shape,
        scheme,
        Role.WEIGHT,
        "float32",
        Framework.NUMPY,
    )
    out, lossless = widen(q, widened(scheme, c.shape))
    got = out.codes.transpose(0, 2, 1) if rows else out.codes
    tiles = np.asarray(out.scale).view(np.uint8)
    tiles = tiles.transpose(0, 2, 1) if rows else tiles
    parts = [fp4_to_fp8(codes[e], sb[e]) for e in range(experts)]
    assert np.array_equal(got, np.stack([p.codes for p in parts])) and np.array_equal(
        tiles, np.stack([p.scale for p in parts])
    )
    assert lossless == all(p.lossless for p in parts)
    w8, s8 = ds.cast_fp4_to_fp8(
        torch.from_numpy(pack(codes[0], "float4_e2m1fn").view(np.int8)),
        torch.from_numpy(sb[0]).view(torch.float8_e8m0fnu),
    )
    assert np.array_equal(parts[0].codes, w8.view(torch.uint8).numpy())
