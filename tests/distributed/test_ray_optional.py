"""Without Ray installed, `--ray` fails with one line that says how to install it; an address
nobody answers at fails in seconds."""

import socket
import sys
import time

import numpy as np
import pytest

from fp8port.cli.main import main
from fp8port.distributed import RayExecutor, RayUnavailableError
from fp8port.distributed.ray_executor import probe

from ..checkpoint.conftest import tiny_llama, write_dense


@pytest.fixture
def no_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError


def test_executor_says_how_to_install(no_ray):
    with pytest.raises(RayUnavailableError, match=r"pip install 'fp8port\[ray\]'"):
        RayExecutor()


@pytest.mark.parametrize("ray_arg", [["--ray"], ["--ray", "auto"]])
def test_cli_flag_is_one_line_exit_2(no_ray, tmp_path, capsys, ray_arg):
    src = write_dense(tmp_path / "src", tiny_llama(np.random.default_rng(0), layers=1))
    dst = tmp_path / "out"
    assert main(["convert", str(src), str(dst), "--preset", "deepseek-v3.1", *ray_arg]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fp8port: error: --ray needs Ray") and "pip install 'fp8port[ray]'" in err
    assert "\n" not in err
    assert not dst.exists()


def test_unreachable_address_fails_fast():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    t = time.perf_counter()
    with pytest.raises(RayUnavailableError, match="ray start --head"):
        probe(f"127.0.0.1:{port}")
    assert time.perf_counter() - t < 6
    probe("auto")  # not a host:port: left to Ray
