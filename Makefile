# Quick start: `make demo` and `make test`. Needs only python3 and make.
# The development environment is locked: uv.lock pins every package (with hashes) and
# `make install` syncs .venv to it exactly. `make lock` refreshes the lock; `make test-latest`
# runs the suite on a fresh, unpinned resolve (the upgrade check, docs/benchmarks.md).
PYTHON     ?= python3
comma      := ,
VENV       := .venv
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.installed-stamp
DEMO       := demo
# uv itself, pinned, in a small venv of its own (uv sync prunes .venv to the lock).
UV_VERSION := 0.13.9
UV_VENV    := .uv
UV         := $(UV_VENV)/bin/uv
EXTRAS     := train dev ray openvino s3 gcs azure http
LATEST     := .venv-latest
# Never download a Python: the one PYTHON names is the one the lock is used with.
export UV_PYTHON_DOWNLOADS := never

.PHONY: install lock demo test test-latest lint format clean

$(UV):
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/python -m pip install -q uv==$(UV_VERSION)

# --compile-bytecode: the packages' .pyc files are written at install, as pip does; uv
# leaves them out, and where PYTHONDONTWRITEBYTECODE is set (this machine) every run
# compiled numpy, click, onnxruntime ... from source: +0.1 s on each `cnnbench infer`.
$(STAMP): pyproject.toml uv.lock Makefile | $(UV)
	$(UV) sync --locked --quiet --compile-bytecode --python $(PYTHON) $(addprefix --extra ,$(EXTRAS))
	touch $(STAMP)

install: $(STAMP)

lock: | $(UV)
	$(UV) lock --upgrade --python $(PYTHON)

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

# The upgrade check: the newest release of every dependency the ranges in pyproject.toml
# allow, in a venv of its own (the lock and .venv are not touched).
test-latest: | $(UV)
	rm -rf $(LATEST)
	$(UV) venv --quiet --python $(PYTHON) $(LATEST)
	VIRTUAL_ENV=$(LATEST) $(UV) pip install --quiet --upgrade -e '.[$(subst $() $(),$(comma),$(EXTRAS))]'
	VIRTUAL_ENV=$(LATEST) $(UV) pip freeze > $(LATEST)/versions.txt
	$(LATEST)/bin/pytest -p no:cacheprovider

clean:
	rm -rf $(VENV) $(UV_VENV) $(LATEST) $(DEMO) .pytest_cache .ruff_cache .mypy_cache tests/azurite/node_modules benchmarks/s3rver/node_modules benchmarks/rclone/.venv
