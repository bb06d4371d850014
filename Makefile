# Quick start: `make demo` and `make test`. Needs only python3 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := demo

.PHONY: install demo test lint format clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[train,dev,ray,openvino]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/cnnbench train mnist_cnn --data digits --epochs 10 --out $(DEMO)/run --export-val $(DEMO)/heldout
	$(BIN)/cnnbench convert $(DEMO)/run/model.keras -o $(DEMO)/digits.onnx
	$(BIN)/cnnbench infer $(DEMO)/digits.onnx $(DEMO)/heldout -o $(DEMO)/predictions.csv --no-progress
	$(BIN)/cnnbench bench --model $(DEMO)/digits.onnx --batch-sizes 1,8,32 --duration 2 --json $(DEMO)/bench.json

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tools/typecheck.py

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .ruff_cache .mypy_cache
