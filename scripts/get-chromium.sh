#!/usr/bin/env bash
# Make sure Debian's chromium and chromium-driver are installed, for the search page's browser test (tests/browser).
# Without them (and no way to install them) the browser test skips with the reason; nothing else needs them.
set -euo pipefail
have_both() { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }

have_both && exit 0
if command -v apt-get >/dev/null; then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "installing Debian's chromium and chromium-driver for the browser test ..."
  $sudo apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
    || { $sudo apt-get update -qq >/dev/null 2>&1 && $sudo apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; } \
    || true
fi
have_both && { echo "chromium $(chromium --version 2>/dev/null | awk '{print $2}') and chromedriver installed"; exit 0; }
echo "warning: chromium/chromedriver not installed; the browser test will be skipped" >&2
exit 0
