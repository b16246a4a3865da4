#!/usr/bin/env bash
# Make sure the real photographs mrl.video.photo_footage films are installed, from Debian's packages if needed:
# mate-backgrounds (nature wallpapers), opencv-doc (sample photos), python3-skimage (its test photos) and
# python-matplotlib-data (grace_hopper.jpg).
set -euo pipefail
packages=(mate-backgrounds opencv-doc python3-skimage python-matplotlib-data)
probes=(/usr/share/backgrounds/mate/nature/Garden.jpg /usr/share/doc/opencv-doc/examples/data/left07.jpg
        /usr/lib/python3/dist-packages/skimage/data/astronaut.png
        /usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg)

have_all() {
  for f in "${probes[@]}"; do [[ -f "$f" ]] || return 1; done
}

have_all && { echo "photos found (${packages[*]})"; exit 0; }
if command -v apt-get >/dev/null; then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "installing Debian's ${packages[*]} ..."
  $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null 2>&1 \
    || { $sudo apt-get update -qq >/dev/null 2>&1 \
         && $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null 2>&1; } \
    || true
fi
have_all && { echo "photos installed (${packages[*]})"; exit 0; }
missing=(); for f in "${probes[@]}"; do [[ -f "$f" ]] || missing+=("$f"); done
echo "error: photos missing: ${missing[*]}. Install Debian's ${packages[*]}" \
     "(apt-get install --no-install-recommends), or pass your own folders: --photo-dirs DIR ..." >&2
exit 1
