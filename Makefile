# Set-up and run targets. Every target installs what it needs into .venv first, idempotently.
# TORCH is the torch + torchvision requirement used when the venv has neither yet; on this machine kind both wheels
# lie on disk. (The test extra needs torchvision, for timm and the torchvision models; PyPI's torchvision does not
# import beside the 2.13.0 CPU wheel, so the pair is torch 2.14.1 + torchvision 0.29.1, which runs on the CPU.)
# Users with a GPU install their own CUDA build first (or set TORCH="torch torchvision").
PYTHON ?= python3
TORCH ?= torch==2.14.1 torchvision==0.29.1
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kdlab-installed

.PHONY: quickstart test install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/kdlab quickstart

# The suite runs on every core (pytest-xdist; tests/conftest.py shares the cores out between the workers), then the
# tests that time a budget run alone, so nothing else is running while they measure.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto -m "not timing"
	$(BIN)/python -m pytest -q -m timing

clean:
	rm -rf $(VENV) .pytest_cache
