#!/usr/bin/env bash
# Build libspng into PREFIX (default /usr/local) for a wheel build: cibuildwheel's before-all step on
# Linux (manylinux containers, x86_64 and aarch64) and macOS, after checks/libjpeg_turbo.sh. setup.py
# finds it by FASTLOAD_PNG_PREFIX or the usual prefixes; auditwheel/delocate then bundle it into the
# wheel (it links the system zlib, which manylinux allows). A pinned source build rather than the
# container's package, for the same decoder everywhere. Needs cmake, a C compiler, zlib's headers and
# network access; on macOS it builds for the host architecture (archs = native).
set -euo pipefail
version=${LIBSPNG_VERSION:-0.7.4}
exec bash "$(dirname "$0")/cmake_build.sh" \
    "https://github.com/randy408/libspng/archive/refs/tags/v${version}.tar.gz" \
    "libspng-${version}" "${1:-/usr/local}" -DSPNG_SHARED=ON -DSPNG_STATIC=OFF -DBUILD_EXAMPLES=OFF
