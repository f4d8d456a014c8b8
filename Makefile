# `make run` and `make test` set everything up on a fresh machine, then run.
# TORCH says which torch to install when the venv has none (default: the CPU wheel 2.13.0).
# With a GPU:  make run TORCH="torch --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
OUT ?= output

.PHONY: setup run test clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install $(TORCH)
	$(BIN)/python -m pip install -e '.[test,ray,bench]'
	touch $@

run: setup
	$(BIN)/unclip run workflows/text_to_image.yaml --out $(OUT)

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(OUT)
