#!/usr/bin/env bash
# Every SIMD path against the portable loops, bit for bit (tools/simd_check.c):
# natively (x86: AVX2 and SSE4.1), then the NEON path built with Debian's
# AArch64 cross-compiler (and with clang where installed) and run under
# qemu-user, so Arm is tested without Arm hardware. Needs gcc, and for the Arm part gcc-aarch64-linux-gnu and
# qemu-user (apt-get install -y gcc-aarch64-linux-gnu qemu-user); without them
# it says so and fails, unless SIMD_CHECK_ARM=optional.
#
#     tools/simd_check.sh [CASES=3000]
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-3000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
srcs="tools/simd_check.c src_c/cpu.c src_c/buffer.c src_c/resample.c src_c/augment.c src_c/png_unfilter.c"
flags="-std=c11 -O2 -ffp-contract=off -Wall -Wno-unused-function -Isrc_c"   # as setup.py

${CC:-gcc} $flags $srcs -lm -o "$work/native"
"$work/native" "$cases"

if command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null; then
    aarch64-linux-gnu-gcc $flags -static $srcs -lm -o "$work/arm64"
    qemu-aarch64 "$work/arm64" "$cases"
    # clang too, as on macOS: it fuses multiply-adds on Arm unless told not to (setup.py does)
    if command -v clang >/dev/null; then
        (cd "$work" && clang --target=aarch64-linux-gnu $flags -I"$OLDPWD/src_c" \
            $(for s in $srcs; do echo "$OLDPWD/$s"; done) -c)
        aarch64-linux-gnu-gcc -static "$work"/*.o -lm -o "$work/arm64-clang"
        qemu-aarch64 "$work/arm64-clang" "$cases"
    fi
elif [ "${SIMD_CHECK_ARM:-required}" = optional ]; then
    echo "simd_check.sh: no aarch64-linux-gnu-gcc/qemu-aarch64; NEON path not checked"
else
    echo "simd_check.sh: needs gcc-aarch64-linux-gnu and qemu-user for the NEON path" >&2
    exit 1
fi
