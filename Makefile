# Two entry points: `make demo` (main job on the embedded defaults) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
ARTIFACTS ?= artifacts
MRL := $(BIN)/mrl

.PHONY: install data demo test bench-quality lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package (no downloads at run time).
data:
	@bash scripts/get-fashion-mnist.sh "$(FASHION_MNIST_DIR)"

demo: install data
	$(MRL) ingest --input $(FASHION_MNIST_DIR) --output $(ARTIFACTS)/data/fashion_mnist.npz
	$(MRL) train --params params.yaml --data $(ARTIFACTS)/data/fashion_mnist.npz --out $(ARTIFACTS)/models/model.pt
	$(MRL) evaluate --params params.yaml --model $(ARTIFACTS)/models/model.pt \
	    --data $(ARTIFACTS)/data/fashion_mnist.npz \
	    --metrics-out $(ARTIFACTS)/metrics/eval.json --plot-out $(ARTIFACTS)/plots/eval_per_dim.png

test: install
	$(BIN)/ruff check mrl tests bench
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check mrl tests bench

# The paper's comparison (MRL, MRL-E, FF, SVD at every dim); about 30 min on 2 cores. Not part of the tests.
bench-quality: install data
	$(BIN)/python bench/quality.py --data-dir $(FASHION_MNIST_DIR) --out bench/results/quality.md

clean:
	rm -rf $(ARTIFACTS)
