#!/usr/bin/env bash
# Build libspng into PREFIX (default /usr/local) for a wheel build: cibuildwheel's before-all step on
# Linux (manylinux containers, x86_64 and aarch64) and macOS, after checks/libjpeg_turbo.sh. setup.py
# finds it by FASTLOAD_PNG_PREFIX or the usual prefixes; auditwheel/delocate then bundle it into the
# wheel (it links the system zlib, which manylinux allows). A pinned source build rather than the
# container's package, for the same decoder everywhere. Needs cmake, a C compiler, zlib's headers and
# network access; on macOS it builds for the host architecture (archs = native).
set -euo pipefail
version=${LIBSPNG_VERSION:-0.7.4}
prefix=${1:-/usr/local}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
curl -fsSL -o src.tar.gz "https://github.com/randy408/libspng/archive/refs/tags/v${version}.tar.gz"
tar xzf src.tar.gz
extra=()
[ "$(uname)" = Darwin ] && extra+=(-DCMAKE_OSX_DEPLOYMENT_TARGET="${MACOSX_DEPLOYMENT_TARGET:-11.0}")
cmake -S "libspng-${version}" -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" \
    -DCMAKE_INSTALL_LIBDIR=lib -DSPNG_SHARED=ON -DSPNG_STATIC=OFF -DBUILD_EXAMPLES=OFF ${extra[@]+"${extra[@]}"}
cmake --build build --parallel 4
cmake --install build
