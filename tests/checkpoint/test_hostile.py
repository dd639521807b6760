"""Hostile and broken inputs: every case ends in a typed, named error (exit 2 from the CLI, no
traceback), nothing visible in DST, SRC unchanged; resource faults keep the work for --resume."""

import json
import subprocess
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from fp8port.checkpoint import Checkpoint, Options, run
from fp8port.checkpoint.safetensors_io import Entry, read_header, write_file
from fp8port.checkpoint.staging import staging_dir
from fp8port.cli.main import main
from fp8port.errors import CheckpointError, NonFiniteError, ResourceError, UnknownNameError

from .conftest import tiny_llama, tree_digest, write_dense

W = "model.layers.0.self_attn.q_proj.weight"


def _one_line_error(capsys, argv, code=2):
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("fp8port: error:") and "Traceback" not in "\n".join(err)
    return err[-1]


def _raw(tmp_path, header: bytes, data=b""):
    p = tmp_path / "h.safetensors"
    p.write_bytes(len(header).to_bytes(8, "little") + header + data)
    return p


def test_duplicate_names_and_deep_nesting(tmp_path):
    dup = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    with pytest.raises(CheckpointError, match="names 'a' twice"):
        read_header(_raw(tmp_path, dup, b"\0" * 4))
    with pytest.raises(CheckpointError, match="not valid UTF-8 JSON"):
        read_header(_raw(tmp_path, b"[" * 100_000 + b"]" * 100_000))


@pytest.fixture
def fp8(tmp_path, rng):
    src = write_dense(tmp_path / "src", tiny_llama(rng, layers=1))
    run(src, tmp_path / "fp8", Options(mode="convert", preset="deepseek-v3.1"), progress=None)
    return tmp_path / "fp8"


def _rewrite(folder: Path, change):
    ck = Checkpoint.open(folder)
    arrays = {n: ck.read(n) for n in ck.tensors}
    dtypes = {n: ck.info(n).dtype for n in ck.tensors}
    change(arrays, dtypes)
    (folder / "model.safetensors").unlink()
    write_file(folder / "model.safetensors", [Entry(n, dtypes[n], a.shape, lambda a=a: a) for n, a in arrays.items()])


@pytest.mark.parametrize(
    "case,match",
    [
        ("scale-nan", "finite and positive"),
        ("scale-zero", "finite and positive"),
        ("scale-e8m0-nan", "finite and positive"),
        ("scale-int", "is I32"),
    ],
)
def test_bad_scales(fp8, tmp_path, capsys, case, match):
    s = W[:-6] + "weight_scale_inv"

    def change(a, d):
        if case == "scale-nan":
            a[s] = a[s].copy()
            a[s][1, 2] = np.nan
        elif case == "scale-zero":
            a[s] = np.zeros_like(a[s])
        elif case == "scale-e8m0-nan":
            a[s] = np.full(a[s].shape, 0xFF, np.uint8).view(ml_dtypes.float8_e8m0fnu)
            d[s] = "F8_E8M0"
        else:
            a[s] = np.ones(a[s].shape, np.int32)
            d[s] = "I32"

    _rewrite(fp8, change)
    err = _one_line_error(capsys, ["dequant", str(fp8), str(tmp_path / "out")])
    assert match in err and s in err
    assert not (tmp_path / "out").exists() and not staging_dir(tmp_path / "out").exists()


@pytest.mark.parametrize(
    "qc,match",
    [
        ({"quant_method": "fp8", "weight_block_size": "128"}, "weight_block_size"),
        ({"quant_method": "fp8", "weight_block_size": [0, 128]}, "weight_block_size"),
        ({"quant_method": "fp8port", "preset": "fp9"}, "unknown preset"),
        ({"quant_method": "fp8port"}, "has no preset"),
        ({"quant_method": "compressed-tensors", "config_groups": {}}, "block_structure"),
    ],
)
def test_bogus_quantization_config(fp8, tmp_path, capsys, qc, match):
    cfg = json.loads((fp8 / "config.json").read_text())
    cfg["quantization_config"] = qc
    (fp8 / "config.json").write_text(json.dumps(cfg))
    assert match in _one_line_error(capsys, ["dequant", str(fp8), str(tmp_path / "out")])


def test_config_not_json(fp8, tmp_path, capsys):
    (fp8 / "config.json").write_text("{not json")
    assert "config.json: not valid JSON" in _one_line_error(capsys, ["inspect", str(fp8)])


def test_index_paths_that_leave_src(tmp_path, rng):
    src = write_dense(tmp_path / "src", tiny_llama(rng, layers=1), shards=2)
    outside = tmp_path / "outside.safetensors"
    (src / "model-00002-of-00002.safetensors").rename(outside)
    (src / "model-00002-of-00002.safetensors").symlink_to(outside)
    with pytest.raises(CheckpointError, match="link that leaves the checkpoint"):
        Checkpoint.open(src)
    idx = json.loads((src / "model.safetensors.index.json").read_text())
    for n in idx["weight_map"]:
        if idx["weight_map"][n] == "model-00002-of-00002.safetensors":
            idx["weight_map"][n] = str(outside)
    (src / "model.safetensors.index.json").write_text(json.dumps(idx))
    with pytest.raises(CheckpointError, match="outside the checkpoint"):
        Checkpoint.open(src)
    # a NUL byte: no file can have that name (pathlib raised ValueError; test_fuzz found it)
    idx["weight_map"] = {n: "a\x00b" for n in idx["weight_map"]}
    (src / "model.safetensors.index.json").write_text(json.dumps(idx))
    with pytest.raises(CheckpointError, match="weight_map names"):
        Checkpoint.open(src)


def test_nonfinite_error_names_tensor_and_block(tmp_path, rng):
    t = tiny_llama(rng, layers=1)
    t[W][300, 5] = np.nan
    src = write_dense(tmp_path / "src", t)
    with pytest.raises(NonFiniteError, match=r"q_proj\.weight.*block \(2, 0\) of 128x128"):
        run(src, tmp_path / "o", Options(mode="convert", preset="deepseek-v3.1"), progress=None)
    with pytest.raises(UnknownNameError, match="non-finite policy"):
        run(src, tmp_path / "o", Options(mode="convert", preset="deepseek-v3.1", nonfinite="ignore"), progress=None)


# ---- resource faults on a small filesystem made by the test ----------------------------------


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here ({r.stderr.strip() or r.returncode}); needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_then_resume(tmp_path, rng, small_fs, capsys):
    src = write_dense(tmp_path / "src", tiny_llama(rng, layers=4), shards=2)
    before = tree_digest(src)
    ref = tmp_path / "ref"
    run(src, ref, Options(mode="convert", preset="deepseek-v3.1", shard_size=900_000), progress=None)
    assert sum(p.stat().st_size for p in ref.iterdir()) > 3 * 2**20  # does not fit in 3 MiB
    dst = small_fs / "out"
    argv = ["convert", str(src), str(dst), "--preset", "deepseek-v3.1", "--shard-size", "900000", "-q"]
    err = _one_line_error(capsys, argv)
    assert "No space left on device" in err and "--resume" in err
    assert not dst.exists() and staging_dir(dst).exists()  # nothing visible; finished shards kept
    assert not list(staging_dir(dst).glob("*.partial"))  # the half-written shard was removed
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_fs)], check=True)
    assert main(argv + ["--resume"]) == 0
    assert tree_digest(dst) == tree_digest(ref)
    assert tree_digest(src) == before


def test_read_only_destination(tmp_path, rng, small_fs, capsys):
    src = write_dense(tmp_path / "src", tiny_llama(rng, layers=1))
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    err = _one_line_error(capsys, ["convert", str(src), str(small_fs / "out"), "--preset", "mxfp8", "-q"])
    assert "Read-only file system" in err


def test_resource_error_is_typed(tmp_path, rng, small_fs):
    src = write_dense(tmp_path / "src", tiny_llama(rng, layers=4))
    with pytest.raises(ResourceError):
        run(src, small_fs / "out", Options(mode="convert", preset="deepseek-v3.1"), progress=None)
