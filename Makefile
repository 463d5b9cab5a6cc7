# Two entry points, both self-contained on a fresh machine: `make quickstart` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines get the CPU build of torch (a bare `torch` would pull a multi-GB CUDA build);
# machines with nvidia-smi get the normal build that `torch>=2.4` in pyproject resolves to.
TORCH_SPEC ?= $(if $(shell command -v nvidia-smi 2>/dev/null),torch>=2.4,torch==2.13.0)

.PHONY: install quickstart test bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# A second `make quickstart` continues (or just re-reports) the run in runs/quickstart.
quickstart: install
	$(VENV)/bin/lmforge quickstart $(if $(wildcard runs/quickstart/quickstart.json),--resume,)

test: install
	$(PY) -m pytest -n 2 -q tests
