#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang (ASan + UBSan) in build-fuzz/ and runs each for
# FUZZ_SECONDS on a copy of its corpus; prints executions, exec/s and crashes, and fails on any crash.
# Environment: FUZZ_SECONDS (60 per target), FUZZ_TARGETS (all), FUZZ_BUILD (build-fuzz), JOBS (2),
# FUZZ_SKIP_BUILD=1 (run what is built).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
BUILD="${FUZZ_BUILD:-build-fuzz}"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
JOBS="${JOBS:-2}"
TARGETS="${FUZZ_TARGETS:-safetensors safetensors_index model_config adapter_config tokenizer jsonl gguf}"
LOCK=/tmp/peft-build.lock

# clang and its libFuzzer runtime (Debian packages), installed once.
CXX_FUZZ="${CXX_FUZZ:-}"
if [ -z "$CXX_FUZZ" ]; then
  for c in clang++ clang++-16 clang++-15 clang++-14; do
    if command -v "$c" >/dev/null && [ -n "$("$c" -print-file-name=libclang_rt.fuzzer-x86_64.a | grep /)" ] &&
       [ -f "$("$c" -print-file-name=libclang_rt.fuzzer-x86_64.a)" ]; then CXX_FUZZ="$c"; break; fi
  done
fi
if [ -z "$CXX_FUZZ" ]; then
  echo "fuzz: installing clang-14 and libclang-rt-14-dev (libFuzzer) with apt-get"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q clang-14 libclang-rt-14-dev
  CXX_FUZZ=clang++-14
fi
echo "fuzz: compiler $CXX_FUZZ ($("$CXX_FUZZ" --version | head -1))"

if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" \
        -DCMAKE_CXX_COMPILER="$CXX_FUZZ" \
        -DPEFT_BUILD_FUZZERS=ON -DPEFT_BUILD_TESTS=OFF -DPEFT_BUILD_BENCH=OFF
fi
build_targets=()
for t in $TARGETS; do build_targets+=(--target "fuzz_$t"); done
if [ -z "${FUZZ_SKIP_BUILD:-}" ]; then flock "$LOCK" cmake --build "$BUILD" -j "$JOBS" "${build_targets[@]}"; fi

# A crash, a sanitizer report, an escaped exception, a hang (-timeout) or a leak ends a target's run
# with an artifact in its work dir; the committed corpus is copied, never written to.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
export PEFT_NUM_THREADS=1 OMP_NUM_THREADS=1
WORK="$BUILD/fuzz-work"
failed=0
mkdir -p "$WORK"
summary="$(mktemp)"
trap 'rm -f "$summary"' EXIT
printf '%-20s %12s %10s %8s %14s\n' target executions exec/s crashes "total execs" > "$summary"
for t in $TARGETS; do
  dir="$WORK/$t"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  cp -n "fuzz/corpus/$t"/* "$dir/corpus/" 2>/dev/null || true
  max_len=4096
  [ "$t" = tokenizer ] && max_len=8192
  before=$(ls "$dir/artifacts" | wc -l)
  log="$dir/last-run.log"
  echo "fuzz: $t for ${SECONDS_PER_TARGET}s (log: $log)"
  rc=0
  "$BUILD/fuzz/fuzz_$t" -max_total_time="$SECONDS_PER_TARGET" -timeout=20 -rss_limit_mb=4096 -max_len="$max_len" \
    -dict="$ROOT/fuzz/json.dict" -print_final_stats=1 -artifact_prefix="$dir/artifacts/" "$dir/corpus" \
    > "$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  execs=${execs:-0}
  crashes=$(( $(ls "$dir/artifacts" | wc -l) - before ))
  if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes=1; fi  # died without writing an artifact
  total=$(( $(cat "$dir/total-executions" 2>/dev/null || echo 0) + execs ))
  echo "$total" > "$dir/total-executions"
  printf '%-20s %12s %10s %8s %14s\n' "$t" "$execs" "${rate:-0}" "$crashes" "$total" >> "$summary"
  if [ "$crashes" -ne 0 ]; then
    failed=1
    echo "fuzz: $t FAILED (exit status $rc); the report:"
    grep -E -A 30 '^==[0-9]+==ERROR|runtime error|fuzz invariant failed|terminate called|deadly signal|Timeout|leak' "$log" | head -60
    ls "$dir/artifacts" | tail -3 | sed "s|^|  artifact: $dir/artifacts/|"
  fi
done
echo
cat "$summary"
exit $failed
