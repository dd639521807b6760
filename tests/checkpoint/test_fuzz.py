"""Property-based fuzzing of the readers and the converter on mutated real files.

The property: whatever the bytes, fp8port either reads the file correctly or raises one of
its typed errors (Fp8portError); never another exception, never a hang. About 12,000 cases,
deterministic (derandomize) so that CI is reproducible; `fuzz/fuzz_checkpoint.py` runs the
same targets under atheris for overnight runs. The layout configs (every quantization_config form
and the AscendV1 description) are mutated too: detection, listing, reading and inspect.
"""

import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fp8port.checkpoint import Checkpoint, Options, layouts, run
from fp8port.checkpoint.inspect import inspect
from fp8port.checkpoint.safetensors_io import read_header, read_tensor
from fp8port.errors import Fp8portError

from .conftest import tiny_llama, tiny_moe, write_dense

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    """A small real sharded checkpoint (header, data, index, config) to mutate."""
    rng = np.random.default_rng(7)
    t = tiny_llama(rng, hidden=64, inter=96, layers=1, vocab=8)
    src = write_dense(tmp_path_factory.mktemp("fuzz") / "src", t, shards=2)
    return src, {p.name: p.read_bytes() for p in src.iterdir()}


def _read_everything(path):
    ck = Checkpoint.open(path)
    for name in ck.tensors:
        ck.read(name)
    return ck


def _expect_typed(fn):
    try:
        fn()
    except Fp8portError:
        pass


@settings(FUZZ, max_examples=5000)
@given(data=st.data())
def test_header_byte_mutations(seed, tmp_path_factory, data):
    _, files = seed
    raw = bytearray(files["model-00001-of-00002.safetensors"])
    hlen = int.from_bytes(raw[:8], "little")
    flips = data.draw(st.lists(st.tuples(st.integers(0, 8 + hlen + 16), st.integers(0, 255)), min_size=1, max_size=6))
    for pos, val in flips:
        if pos < len(raw):
            raw[pos] = val
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    p = tmp_path_factory.getbasetemp() / "mut.safetensors"
    p.write_bytes(bytes(raw))

    def go():
        infos, _ = read_header(p)
        for info in infos.values():
            assert info.begin >= 8 and info.end <= len(raw)
            read_tensor(p, info)

    _expect_typed(go)


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=6,
)


@settings(FUZZ, max_examples=2500)
@given(data=st.data())
def test_header_field_mutations(seed, tmp_path_factory, data):
    _, files = seed
    raw = files["model-00001-of-00002.safetensors"]
    hlen = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + hlen])
    name = data.draw(st.sampled_from(sorted(header)))
    field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", None]))
    if field is None:
        header[name] = data.draw(_JSONISH)
    elif isinstance(header[name], dict):
        header[name][field] = data.draw(
            _JSONISH
            | st.lists(st.integers(-5, 10**6), max_size=3)
            | st.sampled_from(["F32", "BF16", "F4", "U8", "F8_E8M0"])
        )
    body = json.dumps(header).encode()
    p = tmp_path_factory.getbasetemp() / "field.safetensors"
    p.write_bytes(len(body).to_bytes(8, "little") + body + raw[8 + hlen :])

    def go():
        infos, _ = read_header(p)
        for info in infos.values():
            read_tensor(p, info)

    _expect_typed(go)


@settings(FUZZ, max_examples=2000)
@given(data=st.data())
def test_index_and_config_mutations(seed, tmp_path_factory, data):
    src, files = seed
    folder = tmp_path_factory.getbasetemp() / "idx"
    if not folder.exists():
        shutil.copytree(src, folder)
    index = json.loads(files["model.safetensors.index.json"])
    wm = index["weight_map"]
    key = data.draw(st.sampled_from(sorted(wm)))
    choice = data.draw(st.integers(0, 4))
    if choice == 0:
        wm[key] = data.draw(
            st.sampled_from(
                [
                    "../x.safetensors",
                    "/etc/passwd",
                    "",
                    "nope.safetensors",
                    "model-00002-of-00002.safetensors",
                    "sub/../model.safetensors",
                ]
            )
        )
    elif choice == 1:
        wm[data.draw(st.text(max_size=10))] = data.draw(st.sampled_from(sorted(set(wm.values()))))
    elif choice == 2:
        index = data.draw(_JSONISH)
    elif choice == 3:
        index["weight_map"] = data.draw(_JSONISH)
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    cfg = json.loads(files["config.json"])
    if data.draw(st.booleans()):
        cfg["quantization_config"] = data.draw(_JSONISH)
    (folder / "config.json").write_text(json.dumps(cfg))
    _expect_typed(lambda: _read_everything(folder))


@settings(FUZZ, max_examples=1000)
@given(data=st.data())
def test_converter_on_mutated_files(seed, tmp_path_factory, data):
    """The whole pipeline (plan, quantize, write, verify) on a checkpoint with one mutated shard."""
    src, files = seed
    base = tmp_path_factory.getbasetemp()
    folder = base / "conv-src"
    if not folder.exists():
        shutil.copytree(src, folder)
    raw = bytearray(files["model-00002-of-00002.safetensors"])
    for pos, val in data.draw(
        st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), min_size=1, max_size=4)
    ):
        raw[pos] = val
    (folder / "model-00002-of-00002.safetensors").write_bytes(bytes(raw))
    dst = base / "conv-out"
    shutil.rmtree(dst, ignore_errors=True)
    preset = data.draw(st.sampled_from(["deepseek-v3.1", "mxfp4", "nvfp4"]))
    _expect_typed(
        lambda: run(folder, dst, Options(mode="convert", preset=preset, nonfinite="zero"), progress=None, verify=True)
    )
    assert not list(base.glob(".conv-out.fp8port-partial"))  # failures leave nothing behind


# Each layout's config form, written by fp8port itself: what the mutations start from.
LAYOUT_SEEDS = {
    "deepseek": {"preset": "deepseek-v3.1"},
    "compressed-tensors": {"preset": "deepseek-v3", "layout": "compressed-tensors"},
    "fp8port-nvfp4": {"preset": "nvfp4"},
    "fp8port-mxfp4": {"preset": "mxfp4"},
    "ascend-int8": {"preset": "W8A8_DYNAMIC", "layout": "ascend"},
    "ascend-mx": {"preset": "W4A4_MXFP4", "layout": "ascend"},
    "deepseek-v4": {"preset": "deepseek-v4"},  # no experts: every weight FP8, expert_dtype "fp8"
    "deepseek-v4-fp4": {"preset": "deepseek-v4", "moe": True},  # expert_dtype fp4, I8 experts
    "gpt-oss": {"preset": "mxfp4", "layout": "gpt-oss", "moe": True},
    "ct-nvfp4": {"preset": "ct-nvfp4"},
    "ct-mxfp4": {"preset": "ct-mxfp4"},
    "ct-mxfp8": {"preset": "ct-mxfp8"},
    "modelopt": {"preset": "nvfp4", "layout": "modelopt"},
    "modelopt-hf": {"preset": "nvfp4", "layout": "modelopt"},  # hf_quant_config.json only (older exports)
}
# config.json forms whose layout marks live beside quantization_config (DeepSeek-V4's expert_dtype)
WHOLE_CONFIG = ("deepseek-v4", "deepseek-v4-fp4")
# the file whose JSON a seed's mutations change (default: config.json)
SEED_FILES = {
    "ascend-int8": "quant_model_description.json",
    "ascend-mx": "quant_model_description.json",
    "modelopt-hf": "hf_quant_config.json",
}
_PLAUSIBLE = st.sampled_from(
    [
        "fp8",
        "compressed-tensors",
        "fp8port",
        "mxfp4",
        "modelopt",
        "float-quantized",
        "nvfp4-pack-quantized",
        "block",
        "group",
        "channel",
        "tensor",
        "ue8m0",
        "float",
        "re:.*",
        "re:[",
        "Linear",
        "W8A8_MXFP8",
        "W8A16",
        "FLOAT",
        "e8m0",
        "float32",
        "float8_e4m3fn",
        "1x32(axis=-1)",
        "128x128",
        "nvfp4",
        "hif8",
        "fp4",
        "fp6",
        "deepseek-v4",
        "mxfp4-pack-quantized",
        "mxfp8-quantized",
        "tensor_group",
        "local",
        "torch.uint8",
        "torch.float8_e4m3fn",
        "NVFP4",
        "W4A16_NVFP4",
        "NVFP4_AWQ",
    ]
)
_VALUE = _JSONISH | _PLAUSIBLE | st.lists(st.integers(-3, 300), max_size=3)


@pytest.fixture(scope="module")
def layout_seeds(seed, tmp_path_factory):
    src, _ = seed
    root = tmp_path_factory.mktemp("layouts")
    moe = write_dense(root / "moe-src", tiny_moe(np.random.default_rng(8)))
    for name, kw in LAYOUT_SEEDS.items():
        kw = dict(kw)
        run(moe if kw.pop("moe", False) else src, root / name, Options(mode="convert", **kw), progress=None)
        if SEED_FILES.get(name) == "hf_quant_config.json":
            cfg = json.loads((root / name / "config.json").read_text())
            del cfg["quantization_config"]
            (root / name / "config.json").write_text(json.dumps(cfg))
    return root


def _paths(obj, prefix=()):
    """Every key path into a JSON object (dicts only), the object itself first."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))


def _read_all(folder):
    ck = Checkpoint.open(folder)
    handler, _ = layouts.detect(ck)
    for w in handler.weights(ck).values():
        handler.values(ck, w)
    inspect(folder)


def _scratch(layout_seeds, tmp_path_factory, data, prefix):
    """(a drawn layout seed's name, a scratch copy of it to mutate)."""
    name = data.draw(st.sampled_from(sorted(LAYOUT_SEEDS)))
    folder = tmp_path_factory.getbasetemp() / f"{prefix}-{name}"
    if not folder.exists():
        shutil.copytree(layout_seeds / name, folder)
    return name, folder


@settings(FUZZ, max_examples=1500)
@given(data=st.data())
def test_layout_config_mutations(layout_seeds, tmp_path_factory, data):
    """quantization_config (or the AscendV1 description, ModelOpt's hf_quant_config.json) with one value replaced:
    read fully or typed error."""
    name, folder = _scratch(layout_seeds, tmp_path_factory, data, "mut")
    fname = SEED_FILES.get(name, "config.json")
    doc = json.loads((layout_seeds / name / fname).read_text())
    root = doc if fname != "config.json" or name in WHOLE_CONFIG else doc["quantization_config"]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(list(_paths(root))))
        if not path:
            root = data.draw(_VALUE)
            continue
        parent = root
        for k in path[:-1]:
            parent = parent[k]
        if isinstance(parent, dict):
            parent[path[-1]] = data.draw(_VALUE)
    if fname == "config.json" and name not in WHOLE_CONFIG:
        doc["quantization_config"] = root
    else:
        doc = root
    (folder / fname).write_text(json.dumps(doc))
    _expect_typed(lambda: _read_all(folder))


@settings(FUZZ, max_examples=600)
@given(data=st.data())
def test_layout_header_mutations(layout_seeds, tmp_path_factory, data):
    """Each layout's own weight file with header bytes changed: read fully or typed error."""
    name, folder = _scratch(layout_seeds, tmp_path_factory, data, "hdr")
    shard = sorted((layout_seeds / name).glob("*.safetensors"))[0]
    raw = bytearray(shard.read_bytes())
    hlen = int.from_bytes(raw[:8], "little")
    for pos, val in data.draw(
        st.lists(st.tuples(st.integers(8, 8 + hlen - 1), st.integers(0, 255)), min_size=1, max_size=4)
    ):
        raw[pos] = val
    (folder / shard.name).write_bytes(bytes(raw))
    _expect_typed(lambda: _read_all(folder))


@settings(FUZZ, max_examples=400)
@given(data=st.data())
def test_layout_header_field_mutations(layout_seeds, tmp_path_factory, data):
    """One tensor's header entry (dtype, shape) of a layout's shard replaced: typed error or read."""
    name, folder = _scratch(layout_seeds, tmp_path_factory, data, "fld")
    shard = sorted((layout_seeds / name).glob("*.safetensors"))[0]
    raw = shard.read_bytes()
    hlen = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + hlen])
    tensor = data.draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    field = data.draw(st.sampled_from(["dtype", "shape"]))
    header[tensor][field] = data.draw(
        st.sampled_from(["F32", "BF16", "U8", "I8", "F8_E4M3", "F8_E8M0", "F4"])
        if field == "dtype"
        else st.lists(st.integers(0, 300), max_size=3)
    )
    body = json.dumps(header).encode()
    (folder / shard.name).write_bytes(len(body).to_bytes(8, "little") + body + raw[8 + hlen :])
    _expect_typed(lambda: _read_all(folder))
