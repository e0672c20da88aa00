#!/bin/sh
# Run a command with Intel MKL taking the code path it takes on Intel CPUs, on any x86 CPU.
#
#   scripts/mkl-intel-path.sh python benchmarks/lm.py run ...
#
# MKL (torch's CPU matrix products) picks its kernels by CPU vendor: on an AMD CPU it takes other ones
# than on an Intel CPU with the same instruction set, so the same seeded run sums in another order and
# gives other weights. The committed language-model results ran on Intel CPUs and `lm.py compare` pairs
# runs only where they start from the same pre-trained weights; on an AMD host this makes MKL answer
# "Intel" to its own vendor check (a one-line library preloaded before it), and a run then reproduces a
# committed one bit for bit (docs/language-models.md, "Running the benchmarks again"). On an Intel CPU it changes nothing.
set -eu
cache="${XDG_CACHE_HOME:-$HOME/.cache}/lifelong"
lib="$cache/libmkl-intel-path.so"
if [ ! -f "$lib" ]; then
    mkdir -p "$cache"
    src="$cache/mkl-intel-path.$$.c"
    printf 'int mkl_serv_intel_cpu_true(void) { return 1; }\n' > "$src"
    cc -shared -fPIC -O2 -o "$lib.$$" "$src"
    mv "$lib.$$" "$lib"  # whole or not at all: two commands may build it at once
    rm -f "$src"
fi
LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}" exec "$@"
