#!/usr/bin/env bash
# Packs the Debian packages the build needs beyond libtorch (nlohmann-json, PCRE2, utf8proc,
# GoogleTest, Gloo's headers for data-parallel training) into .device-deps/root, for a machine that has CMake and a libtorch but no package archive.
#
# Usage: scripts/device-deps.sh        (then carry .device-deps to that machine; bench/gpu.sh uses it)
# The packages are downloaded with `apt-get download` and unpacked with `dpkg -x`; nothing is installed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST="$ROOT/.device-deps"
PACKAGES=(nlohmann-json3-dev libpcre2-dev libpcre2-8-0 libutf8proc-dev libutf8proc2 libgtest-dev libgloo-dev)
rm -rf "$DEST"
mkdir -p "$DEST/debs" "$DEST/root"
(cd "$DEST/debs" && apt-get download "${PACKAGES[@]}")
for deb in "$DEST"/debs/*.deb; do dpkg -x "$deb" "$DEST/root"; done
rm -rf "$DEST/debs" "$DEST/root/usr/share/doc"
echo "device-deps: $(du -sh "$DEST" | cut -f1) in $DEST (${PACKAGES[*]})"
