from pathlib import Path

import pytest

from ._env import DEVICE

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """GPU-marked kernel tests skip without CUDA (the others run under the interpreter)."""
    if DEVICE == "cuda":
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and Path(item.path).resolve().is_relative_to(HERE):
            item.add_marker(skip)
