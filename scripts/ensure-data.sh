#!/usr/bin/env bash
# Make sure Debian's Fashion-MNIST files are present; install them with apt-get when we can.
set -u
dir="${LIFELONG_DATA:-/usr/share/datasets/fashion-mnist}"
files="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
missing=0
for f in $files; do [ -s "$dir/$f" ] || missing=1; done
[ "$missing" = 0 ] && exit 0
if [ -n "${LIFELONG_DATA:-}" ]; then
  echo "Fashion-MNIST files missing in LIFELONG_DATA=$dir (need: $files)" >&2
  exit 0
fi
cmd="apt-get update && apt-get install -y dataset-fashion-mnist"
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing Fashion-MNIST: $cmd" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >&2 && exit 0
  elif sudo -n true 2>/dev/null; then
    echo "installing Fashion-MNIST: sudo $cmd" >&2
    (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >&2 && exit 0
  fi
fi
echo "Fashion-MNIST is not installed and could not be installed here. Run:" >&2
echo "  sudo sh -c '$cmd'" >&2
echo "or set LIFELONG_DATA to a folder holding: $files" >&2
exit 0
