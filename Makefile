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
	# Azurite, the Azure Blob emulator the tests start on loopback (needs Node.js and npm).
	npm install --prefix .tools --no-audit --no-fund --silent azurite@$(AZURITE_VERSION)
	# Debian's Chromium and ChromeDriver, for the UI's browser test (tests/test_ui_browser.py).
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install \
	    -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/python -m examples.demo

demo-s3: $(STAMP)
	$(BIN)/python -m examples.demo --s3-local

demo-rollout: $(STAMP)
	$(BIN)/python -m examples.demo_rollout

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.report

walkthrough: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/walkthrough.sh

clean:
	rm -rf $(VENV) .tools .mypy_cache .pytest_cache .ruff_cache demo-registry
