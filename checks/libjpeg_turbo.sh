#!/usr/bin/env bash
# Build libjpeg-turbo into PREFIX (default /usr/local) for a wheel build: cibuildwheel's before-all
# step on Linux (manylinux/musllinux containers, x86_64 and aarch64) and macOS. setup.py finds it by
# FASTLOAD_JPEG_PREFIX or the usual prefixes; auditwheel/delocate then bundle it into the wheel.
# A pinned source build rather than the container's package: every platform gets the same decoder, and
# EL8's jconfig.h is a multilib wrapper without the version setup.py looks for. Needs cmake, a C
# compiler and network access; on macOS it builds for the host architecture (archs = native).
set -euo pipefail
version=${LIBJPEG_TURBO_VERSION:-3.0.4}
prefix=${1:-/usr/local}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
curl -fsSL -o src.tar.gz \
    "https://github.com/libjpeg-turbo/libjpeg-turbo/releases/download/${version}/libjpeg-turbo-${version}.tar.gz"
tar xzf src.tar.gz
extra=()
[ "$(uname)" = Darwin ] && extra+=(-DCMAKE_OSX_DEPLOYMENT_TARGET="${MACOSX_DEPLOYMENT_TARGET:-11.0}")
cmake -S "libjpeg-turbo-${version}" -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" \
    -DCMAKE_INSTALL_LIBDIR=lib -DENABLE_STATIC=OFF -DWITH_TURBOJPEG=OFF -DWITH_JPEG8=OFF ${extra[@]+"${extra[@]}"}
cmake --build build --parallel 4
cmake --install build
