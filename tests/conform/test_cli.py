import json

import numpy as np

import fp8port.cli.main as cli
from fp8port.conform import read_bundle


def test_export_check_identify(tmp_path, capsys):
    assert cli.main(["conform", "export", str(tmp_path), "--formats", "e4m3", "--presets", "mxfp8"]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "manifest.json").exists()
    assert (
        cli.main(["conform", "check", str(tmp_path / "expected" / "ml_dtypes.safetensors"), "--against", "ml_dtypes"])
        == 0
    )
    assert "0 mismatched" in capsys.readouterr().out
    assert (
        cli.main(["conform", "check", str(tmp_path / "expected" / "ml_dtypes.npz"), "--against", "torch", "--json"])
        == 1
    )
    rep = json.loads(capsys.readouterr().out)
    assert not rep["ok"] and rep["summary"]["mismatched"] >= 1
    assert cli.main(["conform", "identify", str(tmp_path / "expected" / "mxfp8@rceil.npz")]) == 0
    out = capsys.readouterr().out
    assert "mxfp8/activation: best match rceil" in out and "float8_e4m3fn" not in out
    assert cli.main(["conform", "identify", str(tmp_path / "expected" / "torch.npz"), "--json"]) == 0
    g = json.loads(capsys.readouterr().out)["groups"][0]
    assert g["best"].startswith("torch") and g["matched"] == g["cases"]


def test_user_errors_exit_2(tmp_path, capsys):
    assert cli.main(["conform", "check", str(tmp_path / "missing.npz"), "--against", "mxfp8"]) == 2
    assert "not found" in capsys.readouterr().err
    np.savez(tmp_path / "x.npz", junk=np.zeros(3, np.uint8))
    assert cli.main(["conform", "check", str(tmp_path / "x.npz"), "--against", "nope"]) == 2
    assert "unknown profile or preset" in capsys.readouterr().err
    assert cli.main(["conform", "identify", str(tmp_path / "x.npz")]) == 2
    assert read_bundle(tmp_path / "x.npz")["junk"].dtype == np.uint8


def test_folder_whose_files_disagree_names_them(kit, capsys):
    """The kit's own expected/ folder holds every target: the same case with different values."""
    assert cli.main(["conform", "check", str(kit / "expected"), "--against", "mxfp8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "different values" in err
    named = [w for w in err.split() if "/expected/" in w]
    assert len(named) == 2 and named[0] != named[1]  # both files, by path
