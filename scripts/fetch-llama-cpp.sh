#!/usr/bin/env bash
# Builds llama.cpp (through the pinned llama-cpp-python sdist from PyPI) into .cache/llama-cpp/, for the
# test that loads `peft export --gguf` adapters in llama.cpp itself; also unpacks its HF->GGUF converter.
# Idempotent: a build whose stamp matches the pinned sdist is left alone. Never touches .venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache/llama-cpp"
PIP="$ROOT/.venv/bin/pip"
PY="$ROOT/.venv/bin/python"

VERSION=0.3.36
SDIST="llama_cpp_python-$VERSION.tar.gz"
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
# What .venv lacks: llama-cpp-python's diskcache (its numpy, jinja2 and typing-extensions come with
# transformers) and sentencepiece, which llama.cpp's converter imports for every Llama.
DEPS="diskcache==5.6.3 sentencepiece==0.2.1"
# Portable CPU build (AVX2 class, no -march=native), only the libraries the Python package loads.
CMAKE_FLAGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF"
JOBS="${LLAMA_CPP_JOBS:-$(nproc)}"

# For PYTHONPATH (pip --target): SITE holds llama_cpp, DEPS_DIR the packages above.
SITE="$CACHE/python"
DEPS_DIR="$CACHE/deps"
CONVERT="$CACHE/convert"  # convert_hf_to_gguf.py, convert_lora_to_gguf.py, conversion/, gguf-py/
STAMP="$CACHE/.stamp"
DEPS_STAMP="$CACHE/.deps-stamp"
want="$SDIST_SHA256 $CMAKE_FLAGS"

sha256() { sha256sum "$1" | cut -d' ' -f1; }

if [ ! -x "$PIP" ]; then
  echo "fetch-llama-cpp: error: $PIP is missing: run scripts/setup.sh first (it creates .venv)" >&2
  exit 1
fi
mkdir -p "$CACHE"

if [ -f "$DEPS_STAMP" ] && [ "$(cat "$DEPS_STAMP")" = "$DEPS" ] && [ -d "$DEPS_DIR" ]; then
  echo "fetch-llama-cpp: Python packages: up to date ($DEPS_DIR)"
else
  echo "fetch-llama-cpp: installing $DEPS into $DEPS_DIR"
  rm -rf "$DEPS_DIR"
  # shellcheck disable=SC2086
  if ! "$PIP" install --quiet --disable-pip-version-check --no-deps --only-binary :all: --target "$DEPS_DIR" $DEPS \
      >"$CACHE/deps.log" 2>&1; then
    echo "fetch-llama-cpp: error: could not install $DEPS from PyPI (pip said:)" >&2
    tail -n 4 "$CACHE/deps.log" | sed 's/^/  /' >&2
    exit 1
  fi
  echo "$DEPS" > "$DEPS_STAMP"
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -d "$SITE/llama_cpp" ] && [ -f "$CONVERT/convert_hf_to_gguf.py" ]; then
  echo "fetch-llama-cpp: llama-cpp-python $VERSION: up to date ($CACHE)"
  exit 0
fi
WORK="$(mktemp -d "$CACHE/work.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

if [ -f "$CACHE/$SDIST" ] && [ "$(sha256 "$CACHE/$SDIST")" = "$SDIST_SHA256" ]; then
  echo "fetch-llama-cpp: $SDIST: already downloaded"
else
  echo "fetch-llama-cpp: downloading the sdist llama-cpp-python==$VERSION from PyPI"
  if ! "$PIP" download --quiet --disable-pip-version-check --no-deps --no-binary :all: -d "$WORK" \
      "llama-cpp-python==$VERSION" >"$WORK/pip.log" 2>&1; then
    echo "fetch-llama-cpp: error: could not download llama-cpp-python==$VERSION from PyPI (pip said:)" >&2
    tail -n 4 "$WORK/pip.log" | sed 's/^/  /' >&2
    exit 1
  fi
  if [ "$(sha256 "$WORK/$SDIST")" != "$SDIST_SHA256" ]; then
    echo "fetch-llama-cpp: error: $SDIST has sha256 $(sha256 "$WORK/$SDIST"), expected $SDIST_SHA256" >&2
    exit 1
  fi
  mv "$WORK/$SDIST" "$CACHE/$SDIST"
fi

echo "fetch-llama-cpp: unpacking llama.cpp's converters into $CONVERT"
top="llama_cpp_python-$VERSION/vendor/llama.cpp"
tar -xzf "$CACHE/$SDIST" -C "$WORK" "$top/convert_hf_to_gguf.py" "$top/convert_lora_to_gguf.py" \
  "$top/conversion" "$top/gguf-py" "$top/LICENSE"
rm -rf "$CONVERT"
mv "$WORK/$top" "$CONVERT"

echo "fetch-llama-cpp: building llama.cpp with CMake ($JOBS jobs; about 10 minutes on 2 cores): $CMAKE_FLAGS"
start=$(date +%s)
rm -rf "$SITE"
if ! CMAKE_ARGS="$CMAKE_FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" MAKEFLAGS="-j$JOBS" \
    "$PIP" install --disable-pip-version-check --no-deps --target "$SITE" "$CACHE/$SDIST" \
    >"$WORK/build.log" 2>&1; then
  echo "fetch-llama-cpp: error: building llama-cpp-python==$VERSION failed; the end of the log:" >&2
  tail -n 30 "$WORK/build.log" | sed 's/^/  /' >&2
  rm -rf "$SITE"
  exit 1
fi
if ! PYTHONPATH="$SITE:$DEPS_DIR" "$PY" -c 'import llama_cpp; llama_cpp.llama_backend_init()' >"$WORK/import.log" 2>&1; then
  echo "fetch-llama-cpp: error: the built llama_cpp does not import:" >&2
  tail -n 5 "$WORK/import.log" | sed 's/^/  /' >&2
  exit 1
fi
echo "$want" > "$STAMP"
echo "fetch-llama-cpp: llama-cpp-python $VERSION ready in $SITE ($(( $(date +%s) - start )) s to build)"
