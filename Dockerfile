# The one image for KFP components, the search service and jobs: `mrl` installed, CPU torch by default.
#   docker build -t ghcr.io/mrl-platform/mrl:0.1.0 .
# Not built in CI here (no Docker engine on the build machines); tests/pipeline/test_image.py checks it statically.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# CPU wheels by default; pass --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 for CUDA.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mrl ./mrl
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --extra-index-url "${TORCH_INDEX}" .

FROM ${PYTHON_IMAGE}
# Fashion-MNIST from Debian, so the demo pipeline runs in-cluster with no downloads at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends dataset-fashion-mnist git \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 mrl
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
USER 10001
WORKDIR /home/mrl
ENTRYPOINT []
CMD ["mrl", "--help"]
