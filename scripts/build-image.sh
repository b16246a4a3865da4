#!/usr/bin/env bash
# Build the project image from the Dockerfile with podman (or docker), on a machine with no container registry:
# - the base is localhost/debian:bookworm from scripts/make-base-image.sh (set BASE_IMAGE to use another);
# - pip in the build trusts this machine's CA bundle, passed as the build secret `ca-bundle` (not kept in the image);
# - torch comes from a local wheel of the pinned version when pip's find-links has one, served on 127.0.0.1 as a
#   package index for the build; else from TORCH_INDEX (default: PyTorch's CPU index).
#   usage: scripts/build-image.sh   (IMAGE defaults to the components' image, components/image.py)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/container-env.sh

image=${IMAGE:-$(sed -n 's/^MRL_IMAGE = "\(.*\)"$/\1/p' components/image.py)}
base=${BASE_IMAGE:-localhost/debian:bookworm}
[ -n "${BASE_IMAGE:-}" ] || scripts/make-base-image.sh "$base"

build_args=(--build-arg "BASE_IMAGE=$base" --network host -t "$image")
[ "$CONTAINER_ENGINE" = docker ] && build_args+=(--progress plain)
ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
[ -s "$ca" ] && build_args+=(--secret "id=ca-bundle,src=$ca")

torch=$(sed -n 's/.*"torch==\([^"]*\)".*/\1/p' pyproject.toml)
if [ -z "${TORCH_INDEX:-}" ]; then
  links="${PIP_FIND_LINKS:-} $(python3 -m pip config get global.find-links 2>/dev/null || true)"
  wheel=$(for d in $links; do ls "${d#file://}"/torch-"$torch"+cpu-cp311-*.whl 2>/dev/null || true; done | head -1)
  if [ -n "$wheel" ]; then
    index=$(mktemp -d)
    mkdir "$index/torch"
    ln -s "$wheel" "$index/torch/"
    echo "<a href=\"$(basename "$wheel")\">$(basename "$wheel")</a>" >"$index/torch/index.html"
    # A fixed port: TORCH_INDEX is part of the build cache's key, and a new one would reinstall every dependency.
    port=${WHEEL_PORT:-18739}
    python3 -m http.server --bind 127.0.0.1 --directory "$index" "$port" >"$index.log" 2>&1 &
    server=$!
    trap 'kill $server 2>/dev/null; rm -rf "$index" "$index.log"' EXIT
    sleep 1
    kill -0 $server 2>/dev/null || {
      echo "error: cannot serve the torch wheel on 127.0.0.1:$port (in use? set WHEEL_PORT): $(tail -1 "$index.log")" >&2
      exit 2; }
    TORCH_INDEX=http://127.0.0.1:$port/
    echo "torch $torch: the local wheel $wheel, served at $TORCH_INDEX for the build"
  fi
fi
[ -n "${TORCH_INDEX:-}" ] && build_args+=(--build-arg "TORCH_INDEX=$TORCH_INDEX")

# The terminal gets the build's steps; the log gets everything (pip's output is thousands of lines).
log=${BUILD_LOG:-artifacts/image-build.log}
mkdir -p "$(dirname "$log")"
echo "building $image with $CONTAINER_ENGINE from $base (about 9 min on 2 cores the first time); full log: $log"
previous=$("$CONTAINER_ENGINE" image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
start=$SECONDS
set +e  # the build's own status, not the filter's
"$CONTAINER_ENGINE" build "${build_args[@]}" . 2>&1 | tee "$log" \
  | { grep --line-buffered -E '^(\[[0-9]+/[0-9]+\] )?STEP [0-9]+/[0-9]+: (FROM|RUN|COPY)|^#[0-9]+ \[[^]]+\] (FROM|RUN|COPY)' \
      | cut -c1-140; true; }
status=${PIPESTATUS[0]}
set -e
if [ "$status" != 0 ]; then
  tail -25 "$log" >&2
  echo "error: building $image failed (full log: $log)" >&2
  exit 1
fi
# The image this build replaced is left untagged; each holds its own copy of the venv (~3 GB), so remove it.
if [ -n "$previous" ] && [ "$previous" != "$("$CONTAINER_ENGINE" image inspect --format '{{.Id}}' "$image")" ]; then
  "$CONTAINER_ENGINE" rmi "$previous" >/dev/null 2>&1 || true
fi
echo "built $image in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s:" \
     "$("$CONTAINER_ENGINE" image inspect --format '{{.Size}}' "$image" | awk '{printf "%.2f GB", $1 / 1e9}')"
