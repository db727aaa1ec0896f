#!/usr/bin/env bash
# Build libjpeg-turbo into PREFIX (default /usr/local) for a wheel build: cibuildwheel's before-all
# step on Linux (manylinux/musllinux containers, x86_64 and aarch64) and macOS. setup.py finds it by
# FASTLOAD_JPEG_PREFIX or the usual prefixes; auditwheel/delocate then bundle it into the wheel.
# A pinned source build rather than the container's package: every platform gets the same decoder, and
# EL8's jconfig.h is a multilib wrapper without the version setup.py looks for. Needs cmake, a C
# compiler and network access; on macOS it builds for the host architecture (archs = native).
set -euo pipefail
version=${LIBJPEG_TURBO_VERSION:-3.0.4}
exec bash "$(dirname "$0")/cmake_build.sh" \
    "https://github.com/libjpeg-turbo/libjpeg-turbo/releases/download/${version}/libjpeg-turbo-${version}.tar.gz" \
    "libjpeg-turbo-${version}" "${1:-/usr/local}" -DENABLE_STATIC=OFF -DWITH_TURBOJPEG=OFF -DWITH_JPEG8=OFF
