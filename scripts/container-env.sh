# Sourced by the container scripts: picks the engine (podman, else a Docker engine that answers) into $CONTAINER_ENGINE
# and, for podman, the settings these machines need (scripts/containers.conf) unless CONTAINERS_CONF is set.
if [ -z "${CONTAINER_ENGINE:-}" ]; then
  if command -v podman >/dev/null; then CONTAINER_ENGINE=podman
  elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then CONTAINER_ENGINE=docker
  else
    echo "error: no container engine: install podman (apt-get install podman runc) or start a Docker engine" >&2
    exit 2
  fi
fi
export CONTAINER_ENGINE
if [ "$CONTAINER_ENGINE" = podman ] && [ -z "${CONTAINERS_CONF:-}" ]; then
  command -v runc >/dev/null || { echo "error: podman here needs runc (apt-get install runc)" >&2; exit 2; }
  CONTAINERS_CONF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/containers.conf"
  export CONTAINERS_CONF
fi
