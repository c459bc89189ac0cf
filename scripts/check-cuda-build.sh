#!/usr/bin/env bash
# Compiles every target against a CUDA libtorch (the torch 2.14.1 CUDA wheel in .venv-cuda/, about
# 5.5 GB) in build-cuda/, so code under PEFT_WITH_CUDA keeps compiling on machines without a GPU.
# Nothing is run: that needs a GPU (bench/gpu.sh). Usage: make check-cuda-build
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-cuda"
BUILD="${BUILD_CUDA:-$ROOT/build-cuda}"
TORCH_CUDA="${TORCH_CUDA:-torch==2.14.1}"
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"

bash "$ROOT/scripts/setup.sh"
if ! [ -x "$CUDA_HOME/bin/nvcc" ]; then
  echo "check-cuda-build: error: no nvcc in $CUDA_HOME/bin (set CUDA_HOME to the CUDA toolkit)" >&2
  exit 1
fi
if ! [ -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then
  echo "check-cuda-build: installing $TORCH_CUDA (CUDA build) into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$TORCH_CUDA" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
fi
TORCH_DIR="$("$VENV/bin/python" -c "import os, torch; print(os.path.dirname(torch.__file__))")"
echo "check-cuda-build: torch $("$VENV/bin/python" -c "import torch; print(torch.__version__, 'CUDA', torch.version.cuda)") from $TORCH_DIR"

# The system toolkit may lack NVRTC and the math-library headers; the wheel's nvidia/cu13 has them.
NV="$("$VENV/bin/python" -c "import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], 'cu13'))" 2>/dev/null || true)"
EXTRA=()
if [ -n "$NV" ] && [ -d "$NV/lib" ]; then
  nvrtc="$(ls "$NV"/lib/libnvrtc.so* 2>/dev/null | head -n 1)"
  [ -n "$nvrtc" ] && EXTRA+=(-DCUDA_nvrtc_LIBRARY="$nvrtc" -DCUDA_NVRTC_LIB="$nvrtc")
  EXTRA+=(-DCMAKE_CXX_FLAGS="-isystem $NV/include")
fi

start=$(date +%s)
export PATH="$CUDA_HOME/bin:$PATH" CUDACXX="$CUDA_HOME/bin/nvcc"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_DIR" \
  -DCUDAToolkit_ROOT="$CUDA_HOME" -DPEFT_PYTHON="$VENV/bin/python" -DTORCH_CUDA_ARCH_LIST="9.0" "${EXTRA[@]}"
grep -q "PEFT_WITH_CUDA" "$BUILD/build.ninja" \
  || { echo "check-cuda-build: error: CMake did not find CUDA in $TORCH_DIR (PEFT_WITH_CUDA unset)" >&2; exit 1; }
cmake --build "$BUILD" -j "${JOBS:-$(nproc)}"
echo "check-cuda-build: every target compiled and linked against CUDA libtorch in $(( $(date +%s) - start )) s"
