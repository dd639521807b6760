"""No test writes outside temporary folders: caches point into them, and a conversion run from
the CLI leaves the working tree as it found it."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _inside_tmp(path: str) -> bool:
    return Path(path).resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())


def test_caches_live_in_temporary_folders():
    from tests.conftest import CHOSEN_BY_CALLER

    for var in ("FP8PORT_CACHE", "HF_HOME", "TRITON_CACHE_DIR"):
        if var not in CHOSEN_BY_CALLER:  # a place the caller exported is theirs to choose
            assert _inside_tmp(os.environ[var]), var


def _untracked():
    out = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True, text=True
    )
    return {line for line in out.stdout.splitlines() if "__pycache__" not in line} if out.returncode == 0 else None


def test_cli_conversion_writes_only_where_asked(tmp_path):
    import numpy as np

    from tests.checkpoint.conftest import tiny_llama, write_dense

    before = _untracked()
    src = write_dense(tmp_path / "src", tiny_llama(np.random.default_rng(0), layers=1))
    r = subprocess.run(
        [sys.executable, "-m", "fp8port", "convert", str(src), str(tmp_path / "out"), "--preset", "mxfp8", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no stray files beside DST
    if before is not None:
        assert _untracked() == before  # nothing new in the repository
