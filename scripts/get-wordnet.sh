#!/usr/bin/env bash
# Make sure WordNet's verb, adjective and adverb data files are in $1, installing Debian's wordnet-base if needed.
set -euo pipefail
dir="${1:-/usr/share/wordnet}"
files=(data.verb data.adj data.adv)

have_all() {
  for f in "${files[@]}"; do [[ -f "$dir/$f" ]] || return 1; done
}

have_all && { echo "WordNet found in $dir"; exit 0; }
if [[ "$dir" == /usr/share/wordnet ]] && command -v apt-get >/dev/null; then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "installing Debian's wordnet-base ..."
  $sudo apt-get install -y -qq wordnet-base >/dev/null 2>&1 \
    || { $sudo apt-get update -qq >/dev/null 2>&1 && $sudo apt-get install -y -qq wordnet-base >/dev/null 2>&1; } \
    || true
fi
have_all && { echo "WordNet installed in $dir"; exit 0; }
echo "error: WordNet not found in $dir. Install Debian's wordnet-base, or put its data files" \
     "(${files[*]}) in a directory and run: make bench-text WORDNET_DIR=<that directory>" >&2
exit 1
