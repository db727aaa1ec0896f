#!/usr/bin/env bash
# Download a release tarball and build and install it with CMake into PREFIX: the shared part of
# checks/libjpeg_turbo.sh and checks/libspng.sh (cibuildwheel's before-all step).
#
#     checks/cmake_build.sh URL SOURCE_DIR PREFIX [CMAKE_ARGS...]
#
# Libraries go to PREFIX/lib; on macOS the build targets MACOSX_DEPLOYMENT_TARGET (default 11.0)
# on the host architecture. Needs cmake, a C compiler and network access.
set -euo pipefail
url=$1 src=$2 prefix=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
curl -fsSL -o src.tar.gz "$url"
tar xzf src.tar.gz
extra=()
[ "$(uname)" = Darwin ] && extra+=(-DCMAKE_OSX_DEPLOYMENT_TARGET="${MACOSX_DEPLOYMENT_TARGET:-11.0}")
cmake -S "$src" -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib \
    "$@" ${extra[@]+"${extra[@]}"}
cmake --build build --parallel 4
cmake --install build
