# Everyday loop. `make demo` and `make test` are the README's two commands: each builds its own
# virtual environment from nothing but Python 3.11 and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
AZURITE_VERSION := 3.37.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install lint typecheck test demo demo-s3 demo-rollout walkthrough bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# An editable install compiles nothing, and PYTHONDONTWRITEBYTECODE (set on this machine and
	# in the image) stops Python caching it: every command would compile the package again
	# (~75 ms of each start). A wheel install compiles at install time; so does this.
	$(BIN)/python -m compileall -q src agent loader
	# Azurite, the Azure Blob emulator the tests start on loopback (needs Node.js and npm).
	npm install --prefix .tools --no-audit --no-fund --silent azurite@$(AZURITE_VERSION)
	# Debian's Chromium and ChromeDriver, for the UI's browser test (tests/test_ui_browser.py).
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install \
	    -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }
	touch $(STAMP)

# MLServer for tests/test_mlserver.py, in its own environment: it is large and pins its own
# versions. 1.7.1's workers crash with uvloop >= 0.22 (SeldonIO/MLServer#2286).
MLSERVER := .tools/mlserver/.installed
$(MLSERVER):
	$(PYTHON) -m venv .tools/mlserver
	.tools/mlserver/bin/python -m pip install --quiet --upgrade pip
	.tools/mlserver/bin/python -m pip install --quiet 'mlserver==1.7.1' 'mlserver-sklearn==1.7.1' 'uvloop<0.22'
	touch $(MLSERVER)

# Triton for tests/test_triton.py: nvidia-pytriton's wheel carries a tritonserver binary that
# runs on the CPU, with the Python backend; its stub for Python 3.11 links Debian's libpython.
TRITON := .tools/triton/.installed
TRITON_SERVER := .tools/triton/lib/python3.11/site-packages/pytriton/tritonserver
$(TRITON):
	[ -e /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0 ] || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq libpython3.11 >/dev/null; }
	$(PYTHON) -m venv .tools/triton
	.tools/triton/bin/python -m pip install --quiet --no-deps 'nvidia-pytriton==0.7.0'
	.tools/triton/bin/python -m pip install --quiet 'numpy>=1.26,<2'
	cp $(TRITON_SERVER)/python_backend_stubs/3.11/triton_python_backend_stub $(TRITON_SERVER)/backends/python/
	touch $(TRITON)

# TorchServe for tests/test_torchserve.py (Java 17 runs its frontend; its workers import torch,
# the CPU build that lies on this machine's disk).
TORCHSERVE := .tools/torchserve/.installed
$(TORCHSERVE):
	$(PYTHON) -m venv .tools/torchserve
	.tools/torchserve/bin/python -m pip install --quiet 'torchserve==0.12.0' \
	  'torch-model-archiver==0.12.0' 'torch==2.13.0' 'pyyaml>=6' 'numpy>=1.26,<3'
	touch $(TORCHSERVE)

# KServe's storage initializer for bench/peers_bench.py, in its own environment: it pins
# google-cloud-storage < 3, which the gcs extra cannot share.
KSERVE := .tools/kserve/.installed
$(KSERVE):
	$(PYTHON) -m venv .tools/kserve
	.tools/kserve/bin/python -m pip install --quiet kserve-storage
	touch $(KSERVE)

install: $(STAMP) $(MLSERVER) $(TRITON) $(TORCHSERVE)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck $(MLSERVER) $(TRITON) $(TORCHSERVE)
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/python -m examples.demo

demo-s3: $(STAMP)
	$(BIN)/python -m examples.demo --s3-local

demo-rollout: $(STAMP)
	$(BIN)/python -m examples.demo_rollout

bench: $(STAMP) $(KSERVE)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m compileall -q src agent loader
	$(BIN)/python -m bench.report

walkthrough: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/walkthrough.sh

clean:
	rm -rf $(VENV) .tools .mypy_cache .pytest_cache .ruff_cache demo-registry
