#!/usr/bin/env bash
# The offline text of the language-model benchmarks (lifelong.data.corpora): Debian's Python
# documentation (python3.11-doc) and WordNet (wordnet-base); install them with apt-get when we can.
# Python's own source comes with the interpreter; CLINC150 is read from its folder (LIFELONG_CLINC150).
set -u
packages=""
[ -d /usr/share/doc/python3.11/html/_sources ] || packages="$packages python3.11-doc"
[ -s "${LIFELONG_WORDNET:-/usr/share/wordnet}/data.noun" ] || packages="$packages wordnet-base"
[ -z "$packages" ] && exit 0
cmd="apt-get update && apt-get install -y$packages"
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing the benchmark text: $cmd" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages) >&2 && exit 0
  elif sudo -n true 2>/dev/null; then
    echo "installing the benchmark text: sudo $cmd" >&2
    (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages) >&2 && exit 0
  fi
fi
echo "The language-model benchmarks need Debian packages that are not installed here. Run:" >&2
echo "  sudo sh -c '$cmd'" >&2
exit 0
