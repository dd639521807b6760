"""Virtual environments for peer tools whose pins clash with the project's (NOTES.md section 11).

Each peer has `requirements/<name>.txt`; its venv lives in `<repo>/.venv-peers/<name>` and is made
on first use (or by `make peers`, which CI runs). torch==2.13.0 is installed first from the local
wheel, so that nothing a peer asks for can pull a CUDA build. A peer that cannot be installed makes
the tests that need it skip, with the reason (the last lines pip printed).

    python -m tests.peers.venvs NAME [NAME ...]     # create / refresh, print where
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
HOME = Path(os.environ.get("FP8PORT_PEERS", ROOT / ".venv-peers"))
TORCH = "torch==2.13.0"


def requirements(name: str) -> list[str]:
    path = HERE / "requirements" / f"{name}.txt"
    if not path.is_file():
        raise KeyError(
            f"no peer named {name!r}; known: {sorted(p.stem for p in (HERE / 'requirements').glob('*.txt'))}"
        )
    return [ln.split("#")[0].strip() for ln in path.read_text().splitlines() if ln.split("#")[0].strip()]


# ggml's -march=native build segfaults in its AMX kernels on a Sapphire-Rapids-class Xeon (llama-cpp-python
# 0.3.36, seen in llama_decode on Q8_0 / Q4_1 prompts); the same source built for the CPU's AVX / AVX-512
# extensions without AMX runs. So llama.cpp is built for the flags /proc/cpuinfo lists, never AMX.
_GGML_FLAGS = {
    "avx": "AVX",
    "avx2": "AVX2",
    "fma": "FMA",
    "f16c": "F16C",
    "bmi2": "BMI2",
    "avx512f": "AVX512",
    "avx512vbmi": "AVX512_VBMI",
    "avx512_vnni": "AVX512_VNNI",
    "avx512_bf16": "AVX512_BF16",
}


def build_env(name: str) -> dict[str, str]:
    """Extra environment for building peer `name` (CMAKE_ARGS for llama.cpp on x86-64; else none)."""
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return {}
    if name != "llamacpp" or "avx2" not in flags:
        return {}
    on = [f"-DGGML_{v}=ON" for k, v in _GGML_FLAGS.items() if k in flags]
    return {"CMAKE_ARGS": " ".join(["-DGGML_NATIVE=OFF", *on])}


def _stamp(name: str, reqs: list[str]) -> str:
    return hashlib.sha256(json.dumps([sys.version, reqs, build_env(name)]).encode()).hexdigest()[:16]


def ensure(name: str) -> tuple[Path | None, str]:
    """The peer venv's python (made if missing or stale), or (None, why it could not be made)."""
    reqs = requirements(name)
    venv = HOME / name
    py = venv / "bin" / "python"
    stamp = venv / ".fp8port-stamp"
    HOME.mkdir(parents=True, exist_ok=True)
    with open(HOME / f".{name}.lock", "w") as lock:  # parallel test workers / make peers share it
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text() == _stamp(name, reqs) and py.exists():
            return py, ""
        failed = HOME / f".{name}.failed"
        if failed.is_file() and failed.read_text().startswith(_stamp(name, reqs)):
            return None, failed.read_text().split("\n", 1)[1]  # one failed attempt per requirements set
        print(f"fp8port tests: creating peer venv {venv} ({', '.join(reqs)})", file=sys.stderr)
        steps = [[sys.executable, "-m", "venv", "--clear", str(venv)]]
        pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        extra = build_env(name)
        if extra:  # pip's wheel cache ignores CMAKE_ARGS: one cache per set of build flags
            flags = hashlib.sha256(json.dumps(extra).encode()).hexdigest()[:16]
            cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fp8port-pip" / flags
            pip.append(f"--cache-dir={cache}")
        if TORCH in reqs:
            steps.append(pip + [TORCH])
        rest = [r for r in reqs if r != TORCH]
        if rest:
            steps.append(pip + rest)
        env = {**os.environ, **extra}
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if r.returncode:
                tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
                why = f"peer {name!r} could not be installed ({' '.join(cmd[3:6])}...): {tail}"
                failed.write_text(_stamp(name, reqs) + "\n" + why)
                return None, why
        stamp.write_text(_stamp(name, reqs))
        failed.unlink(missing_ok=True)
        return py, ""


def run(
    name: str, script: str, *args: str, timeout: float = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `script` (Python source) with the peer's interpreter; raise with its output if it fails."""
    py, why = ensure(name)
    if py is None:
        raise RuntimeError(why)
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    full_env.pop("PYTHONPATH", None)  # the peer sees its own packages only
    r = subprocess.run([str(py), "-c", script, *args], capture_output=True, text=True, timeout=timeout, env=full_env)
    if r.returncode:
        raise AssertionError(
            f"peer {name} script failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
        )
    return r


if __name__ == "__main__":
    bad = 0
    for n in sys.argv[1:] or sorted(p.stem for p in (HERE / "requirements").glob("*.txt")):
        py, why = ensure(n)
        print(f"{n}: {py}" if py else f"{n}: NOT INSTALLED: {why}")
        bad += py is None
    sys.exit(0)  # a peer that cannot be installed makes its tests skip with the reason; set-up goes on
