#!/usr/bin/env bash
# Build the C kernels with AddressSanitizer + UndefinedBehaviorSanitizer and run them over fuzz
# seeds, mutated inputs and bad-input fixtures (tools/fuzz.py --write-corpus) through
# tools/asan_driver.c. Any sanitizer report aborts with a non-zero status.
#
#     tools/asan.sh [N_MUTANTS=3000] [SEED=11]
#
# Needs a C compiler with the sanitizers, libjpeg-turbo's, libspng's and libdeflate's headers (libjpeg62-turbo-dev,
# libspng-dev, libdeflate-dev) and a Python that can import numpy and Pillow (to write the corpus).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3000}
seed=${2:-11}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc=${CC:-gcc}
python=${PYTHON:-python3}

"$cc" -std=c11 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
    -Wall -Wno-unused-function -DFL_HAVE_LIBJPEG_TURBO=1 -DFL_HAVE_SPNG=1 -DFL_HAVE_LIBDEFLATE=1 -Isrc_c \
    tools/asan_driver.c src_c/buffer.c src_c/cpu.c src_c/exif.c src_c/jpeg_decode.c src_c/png_decode.c src_c/png_unfilter.c \
    src_c/resample.c src_c/augment.c src_c/geometry.c src_c/sample.c -ljpeg -lspng -ldeflate -lz -lm -o "$work/asan_driver"

"$python" tools/fuzz.py --write-corpus "$work/corpus" --n "$n" --seed "$seed"
# Special files a dataset can hold under an image name: a directory, a FIFO, a dangling link.
mkdir -p "$work/special" "$work/special/dir.jpg"
mkfifo "$work/special/fifo.jpg"
ln -s "$work/nowhere.jpg" "$work/special/dangling.jpg"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
"$work/asan_driver" "$work/corpus" "$work/special"
echo "asan.sh: no AddressSanitizer or UndefinedBehaviorSanitizer findings"
