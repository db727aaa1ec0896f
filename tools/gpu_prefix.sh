#!/usr/bin/env bash
# Unpack the codecs fastload links (libjpeg-turbo, libspng, libdeflate, zlib: headers and shared
# libraries, from this Debian machine's packages) into .gpu/root, for tools/gpu_check.sh on a
# machine that has no package registry to install them from: take .gpu along (it is git-ignored),
# and gpu_check.sh builds against it, so the GPU machine measures the decoder measured here.
#
#     tools/gpu_prefix.sh          # needs apt-get download and dpkg-deb; about 2 MB
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu
mkdir -p .gpu/debs
(cd .gpu/debs && apt-get download -q libjpeg62-turbo libjpeg62-turbo-dev libspng0 libspng-dev \
    libdeflate0 libdeflate-dev zlib1g zlib1g-dev)
for f in .gpu/debs/*.deb; do dpkg-deb -x "$f" .gpu/root; done
rm -rf .gpu/debs
# A development link that names its library by absolute path (libz.so -> /lib/...) points into the
# unpacked tree instead: that machine's own copy may be another version.
find .gpu/root -type l -lname '/*' | while read -r link; do
    ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" ".gpu/root$(readlink "$link")")" "$link"
done
du -sh .gpu
