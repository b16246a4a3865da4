#!/usr/bin/env bash
# Make sure the four Fashion-MNIST idx files are in $1, installing Debian's dataset-fashion-mnist if needed.
set -euo pipefail
dir="${1:-/usr/share/datasets/fashion-mnist}"
files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

have_all() {
  for f in "${files[@]}"; do [[ -f "$dir/$f.gz" || -f "$dir/$f" ]] || return 1; done
}

have_all && { echo "Fashion-MNIST found in $dir"; exit 0; }
if [[ "$dir" == /usr/share/datasets/fashion-mnist ]] && command -v apt-get >/dev/null; then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "installing Debian's dataset-fashion-mnist ..."
  $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
    || { $sudo apt-get update -qq >/dev/null 2>&1 && $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } \
    || true
fi
have_all && { echo "Fashion-MNIST installed in $dir"; exit 0; }
echo "error: Fashion-MNIST not found in $dir. Install Debian's dataset-fashion-mnist, or put the four idx files" \
     "(${files[*]}, optionally .gz) in a directory and run: make demo FASHION_MNIST_DIR=<that directory>" >&2
exit 1
