#!/usr/bin/env bash
# Start podman's Docker-compatible API (`podman system service`) in the background, with this project's podman settings
# (scripts/containers.conf), for `mrl pipeline run --runner docker`; does nothing when one already answers.
#   usage: scripts/podman-socket.sh [SOCKET]   (default /run/podman/podman.sock as root, else $XDG_RUNTIME_DIR's)
set -euo pipefail
CONTAINER_ENGINE=podman
source "$(dirname "$0")/container-env.sh"
command -v podman >/dev/null || { echo "error: podman is not installed: apt-get install podman runc" >&2; exit 2; }
if [ "$(id -u)" = 0 ]; then default=/run/podman/podman.sock; else default=${XDG_RUNTIME_DIR:-/run/user/$(id -u)}/podman/podman.sock; fi
socket=${1:-$default}

answers() { python3 -c "import socket, sys; s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(sys.argv[1]); \
s.sendall(b'GET /_ping HTTP/1.0\r\n\r\n'); sys.exit(b' 200 ' not in s.recv(64))" "$socket" 2>/dev/null; }

if ! answers; then
  mkdir -p "$(dirname "$socket")"
  log=$(dirname "$socket")/podman-service.log
  nohup podman system service --time=0 "unix://$socket" >"$log" 2>&1 &
  for _ in $(seq 50); do answers && break; sleep 0.2; done
  answers || { tail -5 "$log" >&2; echo "error: podman system service did not answer on $socket (log: $log)" >&2; exit 1; }
fi
echo "podman's Docker API answers at unix://$socket"
[ "$socket" = "$default" ] || echo "export DOCKER_HOST=unix://$socket"
