#!/usr/bin/env bash
# Make sure Debian's podman, runc (podman's runtime here: scripts/containers.conf) and debootstrap (the registry-free
# base image) are installed, for `make image` and the container tier. A Docker engine that answers needs none of them.
set -euo pipefail
have_all() { command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null; }

have_all && exit 0
command -v docker >/dev/null && docker info >/dev/null 2>&1 && exit 0
if command -v apt-get >/dev/null; then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "installing Debian's podman, runc and debootstrap for the image ..."
  $sudo apt-get install -y -qq --no-install-recommends podman runc debootstrap >/dev/null 2>&1 \
    || { $sudo apt-get update -qq >/dev/null 2>&1 \
         && $sudo apt-get install -y -qq --no-install-recommends podman runc debootstrap >/dev/null 2>&1; } \
    || true
fi
have_all && { echo "$(podman --version) installed"; exit 0; }
echo "error: building the image needs podman, runc and debootstrap (apt-get install podman runc debootstrap)" \
     "or a running Docker engine" >&2
exit 2
