#!/usr/bin/env bash
# A Debian bookworm base image made without a container registry: debootstrap (minbase) from this machine's Debian
# mirror, imported into podman (or docker). The Dockerfile installs Python 3.11 from bookworm itself.
#   usage: scripts/make-base-image.sh [IMAGE]   (default localhost/debian:bookworm; rebuilt only when missing)
set -euo pipefail
image=${1:-localhost/debian:bookworm}
engine=${CONTAINER_ENGINE:?set CONTAINER_ENGINE to podman or docker}

if "$engine" image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image: present"
  exit 0
fi
command -v debootstrap >/dev/null || {
  echo "error: making the base image $image needs debootstrap: apt-get install debootstrap" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "error: debootstrap needs root to make the base image $image" >&2; exit 2; }

# The mirror apt already uses here (deb822 or one-line sources), else Debian's CDN.
mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
         | sed -n 's#^URIs: *\(http[^ ]*/debian\)/*$#\1#p; s#^deb \[*[^]]*\]* *\(http[^ ]*/debian\)/* bookworm .*#\1#p' \
         | head -1 || true)
mirror=${DEBIAN_MIRROR:-${mirror:-http://deb.debian.org/debian}}

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
echo "base image $image: debootstrap bookworm from $mirror (about a minute)"
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  tail -5 "$rootfs.log" >&2; echo "error: debootstrap from $mirror failed (log: $rootfs.log)" >&2; exit 1; }
rm -f "$rootfs.log"
tar -C "$rootfs" -c . | "$engine" import - "$image" >"$rootfs.log" 2>&1 || {
  cat "$rootfs.log" >&2; echo "error: $engine import of the base image $image failed" >&2; exit 1; }
rm -f "$rootfs.log"
echo "base image $image: imported"
