# Two entry points, both self-contained on a fresh machine: `make quickstart` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines get the CPU build of torch (a bare `torch` would pull a multi-GB CUDA build);
# machines with nvidia-smi get the normal build that `torch>=2.4` in pyproject resolves to.
TORCH_SPEC ?= $(if $(shell command -v nvidia-smi 2>/dev/null),torch>=2.4,torch==2.13.0)

.PHONY: install quickstart test bench gpu-wheels gpu-check browser ui

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# The real llama.cpp for the GGUF parity tests: node-llama-cpp ships prebuilt CPU builds (npm registry only,
# nothing compiled) into the git-ignored .node/. Skipped where npm is missing (those tests then skip).
NODE_LLAMA_CPP := node-llama-cpp@3.21.1
.node/.installed:
	npm i -E --prefix .node --no-audit --no-fund $(NODE_LLAMA_CPP)
	touch $@

install: $(VENV)/.installed $(if $(shell command -v npm 2>/dev/null),.node/.installed,)

# A second `make quickstart` continues (or just re-reports) the run in runs/quickstart.
quickstart: install
	$(VENV)/bin/lmforge quickstart $(if $(wildcard runs/quickstart/quickstart.json),--resume,)

# The web UI on http://127.0.0.1:7860, listing runs/ (the quickstart's runs among them).
ui: install
	$(VENV)/bin/lmforge ui --runs runs

# Lint, format and types first (seconds), then the suite; CI runs exactly this (.ci/run).
test: install browser
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -n 2 -q tests

# tests/ui/test_browser.py drives Debian's Chromium through its driver (no browser download): installed once, as
# root or through sudo; a machine without apt-get, or a user who is neither root nor has sudo, skips those tests
# (they say why).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif command -v apt-get >/dev/null && { [ -z "$(SUDO)" ] || command -v sudo >/dev/null; }; then \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "cannot apt-get install chromium chromium-driver here: the browser tests of lmforge ui will be skipped"; fi

# The GPU proof (benchmarks/gpu_check.py): on a machine with nvidia-smi, every check on real sizes, with the
# wheels of `make gpu-wheels` (if present) installed first; elsewhere the same orchestration as a --dry-run on
# tiny models. Results: $(GPU_OUT)/gpu_check.json, .md and .log.
GPU_OUT ?= runs/gpu-check
ifneq ($(shell command -v nvidia-smi 2>/dev/null),)
gpu-check:
	python3 benchmarks/gpu_check.py $(GPU_OUT) $(if $(wildcard .whl/*.whl),--wheels .whl,)
else
gpu-check: install
	$(PY) benchmarks/gpu_check.py $(GPU_OUT) --dry-run
endif

# Wheels for a GPU machine without network (Python 3.12, manylinux x86_64), into the git-ignored .whl/.
gpu-wheels: install
	$(PY) benchmarks/gpu_wheels.py .whl
