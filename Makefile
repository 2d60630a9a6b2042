# Two commands a newcomer needs:  make demo  |  make test
# Each creates .venv and installs what it needs; a second run skips the install.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUT ?= out/cora

.PHONY: demo test lint typecheck unit clean help

help:
	@echo "make demo   - train, export and run the Cora GNN bundles end to end"
	@echo "make test   - lint, type-check and run the whole test suite"
	@echo "make clean  - remove .venv and demo output"

# Re-install only when the dependency list changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[export,onnxruntime,samples,mqtt,dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python samples/cora/cora.py --out $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy edge_sdk runtimes exporters

unit: $(STAMP)
	$(BIN)/python -m pytest

test: lint typecheck unit

clean:
	rm -rf $(VENV) $(DEMO_OUT)
