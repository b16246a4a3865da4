# The one image for the KFP components, the search service, the drift job and the in-cluster MLflow server:
# `mrl` installed in /opt/venv, run as the non-root user mrl (uid 10001). CPU torch by default.
#
#   docker build -t ghcr.io/mrl-platform/mrl:0.1.0 .
#
# CUDA: a CUDA runtime base that has Python 3.11 (Ubuntu 22.04 does) and the PyTorch wheel index of the same
# CUDA major version that publishes the torch version pinned in pyproject.toml (https://download.pytorch.org/whl/torch/):
#
#   docker build -t ghcr.io/mrl-platform/mrl:0.1.0-cu128 \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu22.04 \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#
# Without a registry (no python:3.11 base to pull) and with podman: `make image` (scripts/build-image.sh).
ARG BASE_IMAGE=python:3.11-slim-bookworm

# Build and runtime start from the same base, so the venv's interpreter path exists in both.
FROM ${BASE_IMAGE} AS base
ARG DEBIAN_FRONTEND=noninteractive
# python:3.11 images have it; a CUDA (Ubuntu 22.04) base gets the distribution's python3.11.
RUN command -v python3.11 >/dev/null \
 || { apt-get update \
      && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
      && rm -rf /var/lib/apt/lists/*; }

FROM base AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml ./
# Optional secret `ca-bundle`: the CA certificates pip trusts, for networks whose proxy re-signs TLS
# (`--secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt`; scripts/build-image.sh passes the host's).
# A secret is mounted for its step only and never stored in a layer.
# The dependencies first, from pyproject.toml alone: a code change rebuilds only the small layer below.
# psycopg2 and boto3: the MLflow server in k8s/base/mlflow.yaml runs from this image (Postgres + S3).
# CPU wheels by default. torch stays pinned by pyproject.toml; from this index it resolves to the local build
# (2.x.y+cpu, +cu128, ...), which pip ranks above PyPI's build of the same version. (Declared here: a build argument
# is part of the cache key of every RUN after it.)
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && pip install --upgrade "pip>=24" \
 && python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
      > /tmp/requirements.txt \
 && pip install --extra-index-url "${TORCH_INDEX}" -r /tmp/requirements.txt "psycopg2-binary>=2.9,<3" "boto3>=1.34,<2"
COPY README.md ./
COPY mrl ./mrl
COPY components ./components
COPY pipelines ./pipelines
# No network here: setuptools (the build backend) came with the dependencies.
RUN pip install --no-deps --no-build-isolation . && pip check

FROM base
# Debian's dataset-fashion-mnist: the demo pipeline runs in-cluster with no downloads at run time.
# /gcs, /minio, /s3: the KFP v2 launcher stages artifacts there, and a non-root user cannot create
# directories in / (kubeflow/pipelines#5673).
RUN apt-get update \
 && apt-get install -y --no-install-recommends dataset-fashion-mnist git \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 --user-group mrl \
 && mkdir -p /gcs /minio /s3 \
 && chown mrl:mrl /gcs /minio /s3
COPY --from=build /opt/venv /opt/venv
# The k8s manifests mount a read-only root filesystem: no .pyc writes, matplotlib's cache in /tmp.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    MPLCONFIGDIR=/tmp/matplotlib
# Numeric, so Kubernetes' runAsNonRoot can verify it (k8s/ sets runAsUser 10001 to match).
USER 10001:10001
WORKDIR /home/mrl
ENTRYPOINT []
CMD ["mrl", "--help"]
