#!/usr/bin/env bash
# The GPU check in one call: builds against the machine's libtorch (a PyTorch wheel's), runs the test
# suite, replays the golden runs on CUDA, then times our LoRA and AdaLoRA steps and PEFT's side by side.
#
# On the device machine, from the repository root (`make bench-gpu` there):
#   bash bench/gpu.sh
# It needs the packages of scripts/device-deps.sh in .device-deps (unless the machine has them) and,
# for the tokenizer tests, .cache/tokenizers (scripts/fetch-test-data.sh); carry both.
# Writes to $OUT (default out/gpu): build.txt, tests.txt, replay.txt, bench.txt, anchor.jsonl, summary.txt.
# Environment: GPU_DEVICE (cuda), GPU_BATCH (8x1024), GPU_SHAPES ("smollm2-135m llama-3.2-1b"),
#   GPU_SKIP_TESTS=1 (skip the test suite), GPU_LAYERS and GPU_STEPS (a smaller bench, for a dry run on
#   the CPU: GPU_DEVICE=cpu GPU_BATCH=1x32 GPU_LAYERS=2 GPU_STEPS=2), PEFT_ANCHOR (PEFT's benchmark script; default
#   shared/device/peft_anchor.py or ../shared/device/peft_anchor.py when present).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
DEVICE=${GPU_DEVICE:-cuda}
BATCH=${GPU_BATCH:-8x1024}
SHAPES=${GPU_SHAPES:-smollm2-135m llama-3.2-1b}
BUILD=${GPU_BUILD:-build-gpu}
JOBS=$(nproc)
status=()
note() { status+=("$1"); echo "gpu.sh: $1"; }
started=$(date +%s)
elapsed() { echo "$(($(date +%s) - started))s"; }

# 1. Build against the Python wheel's libtorch when there is one, with the unpacked packages.
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
  TP=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 || true
  ARGS=(-DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=${TP}")
  DEPS="$ROOT/.device-deps/root/usr"
  if [ -d "$DEPS" ]; then
    LIB="$DEPS/lib/x86_64-linux-gnu"
    ARGS=(-DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=${TP};${DEPS}" "-DPCRE2_LIB=$LIB/libpcre2-8.a"
          "-DPCRE2_INCLUDE=$DEPS/include" "-DUTF8PROC_LIB=$LIB/libutf8proc.a" "-DUTF8PROC_INCLUDE=$DEPS/include"
          "-DGTest_DIR=$LIB/cmake/GTest" "-Dnlohmann_json_DIR=$DEPS/share/cmake/nlohmann_json")
  fi
  cmake -S . -B "$BUILD" -G Ninja "${ARGS[@]}" &&
    cmake --build "$BUILD" -j "$JOBS" --target peft_cli peft_tests peft_text_tests peft_bench peft_example_custom_loop
} > "$OUT/build.txt" 2>&1
if [ $? -ne 0 ]; then
  note "build FAILED ($(elapsed)); see build.txt"
  tail -40 "$OUT/build.txt"
  printf '%s\n' "${status[@]}" > "$OUT/summary.txt"
  exit 1
fi
note "build ok ($(elapsed))"

# 2. The test suite (on the CPU of this build: it checks the libtorch 2.x code paths).
if [ "${GPU_SKIP_TESTS:-0}" != 1 ]; then
  (cd "$BUILD" && ctest -j "$JOBS" --output-on-failure) > "$OUT/tests.txt" 2>&1
  note "tests: $(grep -E 'tests passed|tests failed' "$OUT/tests.txt" | tail -1) ($(elapsed))"
fi

# 3. The golden runs replayed on the GPU: float32 (TF32 off) within the golden tolerances, then a
#    bfloat16 base against the same reference (reported, not required).
{
  for c in llama_a gpt2_a bert_a llama_lora; do
    echo "== replay $c --device $DEVICE"
    "$BUILD/peft" replay "tests/fixtures/golden/$c" --device "$DEVICE" --quiet
    echo "exit $?"
  done
  echo "== replay llama_a --device $DEVICE --dtype bfloat16"
  "$BUILD/peft" replay tests/fixtures/golden/llama_a --device "$DEVICE" --dtype bfloat16 --quiet
  echo "exit $?"
} > "$OUT/replay.txt" 2>&1
note "float32 replays within the golden tolerances: $(awk '/^== /{bf=/bfloat16/} /^exit 0/{if(!bf)n++} END{print n+0}' "$OUT/replay.txt") of 4; bfloat16 base: $(sed -n '/bfloat16/,$p' "$OUT/replay.txt" | grep -o '"loss_max_rel_err":[^,}]*') ($(elapsed))"

# 4. Our training step: LoRA and AdaLoRA interleaved (the ratio), then each alone (its peak memory).
{
  for shape in $SHAPES; do
    for methods in lora,adalora lora adalora; do
      echo "== $shape $methods"
      PEFT_BENCH_LAYERS=${GPU_LAYERS:-} PEFT_BENCH_STEPS=${GPU_STEPS:-10} \
        PEFT_BENCH_SHAPE=$shape PEFT_BENCH_DEVICE=$DEVICE PEFT_BENCH_DTYPE=bfloat16 PEFT_BENCH_BATCH=$BATCH \
        PEFT_BENCH_METHODS=$methods PEFT_BENCH_ALLOCATOR=$([ "$methods" = adalora ] && echo 1 || echo 0) \
        "$BUILD/peft_bench" adalora
    done
  done
} > "$OUT/bench.txt" 2>&1
note "bench: $(grep -c 'ms/step (median)' "$OUT/bench.txt") step timings ($(elapsed))"

# 5. PEFT on the same card, same shapes and batch.
ANCHOR=${PEFT_ANCHOR:-}
for a in shared/device/peft_anchor.py ../shared/device/peft_anchor.py; do
  [ -z "$ANCHOR" ] && [ -f "$a" ] && ANCHOR=$a
done
if [ -n "$ANCHOR" ] && [ -f "$ANCHOR" ]; then
  PYTHONUNBUFFERED=1 python3 "$ANCHOR" "${BATCH%x*}" "${BATCH#*x}" > "$OUT/anchor.jsonl" 2> "$OUT/anchor-err.txt"
  note "PEFT anchor: $(wc -l < "$OUT/anchor.jsonl") runs, errors in anchor-err.txt: $(wc -l < "$OUT/anchor-err.txt") lines ($(elapsed))"
else
  note "PEFT anchor: not found (set PEFT_ANCHOR)"
fi

{
  printf '%s\n' "${status[@]}"
  echo
  grep -E "^== |ms/step|ratio|peak memory|update_and_allocate" "$OUT/bench.txt"
  echo
  grep -E "^== |loss|budget|adapter|logits|exit" "$OUT/replay.txt" | head -60
  [ -f "$OUT/anchor.jsonl" ] && cat "$OUT/anchor.jsonl"
} > "$OUT/summary.txt"
cat "$OUT/summary.txt"
