# Two entry points, each sets up from nothing (Debian GL libraries, venv, packages):
#   make demo   - run the main job on embedded defaults (no GPU, no network, no API key)
#   make test   - lint and run the test suite
# Python 3.11 or 3.12 (docs/python.md): the first found, or say which: make test PYTHON=python3.12
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
PY_VERSION := $(shell $(PYTHON) -c 'import sys; print(*sys.version_info[:2], sep=".")')
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(PY_VERSION)
GL_PACKAGES := libosmesa6 libegl1 libegl-mesa0 libgl1
RUN_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: setup system-deps demo test lint bench clean

setup: system-deps $(STAMP)

# Headless MuJoCo rendering needs OSMesa or Mesa EGL; install only what is missing.
system-deps:
	@missing=""; for p in $(GL_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# A venv made by another Python is replaced, not mixed with this one.
$(STAMP): pyproject.toml
	@if [ -x $(BIN)/python ] && [ "$$($(BIN)/python -c 'import sys; print(*sys.version_info[:2], sep=".")')" != "$(PY_VERSION)" ]; then \
	  echo "$(VENV) was made by another Python: replacing it with one for Python $(PY_VERSION)"; rm -rf $(VENV); \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[train,dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/sarl train configs/libero10.yaml --out $(RUN_DIR)

lint: setup
	$(BIN)/ruff check sarl_dist tests benchmarks
	$(BIN)/ruff format --check sarl_dist tests benchmarks
	$(BIN)/lint-imports

test: lint
	RAY_USAGE_STATS_ENABLED=0 $(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) .pytest_cache
