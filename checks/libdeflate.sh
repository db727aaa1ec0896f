#!/usr/bin/env bash
# Build libdeflate into PREFIX (default /usr/local) for a wheel build: cibuildwheel's before-all step on
# Linux and macOS, beside checks/libspng.sh. setup.py finds it by FASTLOAD_DEFLATE_PREFIX or the usual
# prefixes (it inflates a PNG's image data in one call); auditwheel/delocate then bundle it into the
# wheel. Needs cmake, a C compiler and network access.
set -euo pipefail
version=${LIBDEFLATE_VERSION:-1.19}
exec bash "$(dirname "$0")/cmake_build.sh" \
    "https://github.com/ebiggers/libdeflate/archive/refs/tags/v${version}.tar.gz" \
    "libdeflate-${version}" "${1:-/usr/local}" -DLIBDEFLATE_BUILD_SHARED_LIB=ON -DLIBDEFLATE_BUILD_STATIC_LIB=OFF \
    -DLIBDEFLATE_BUILD_GZIP=OFF
