#!/usr/bin/env bash
# Builds the project's own targets with AddressSanitizer + UndefinedBehaviorSanitizer in build-asan/
# (libtorch stays uninstrumented) and runs the whole ctest suite there; prints build and run times.
# Environment: ASAN_BUILD (build-asan), JOBS (2), CTEST_ARGS (extra ctest arguments).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${ASAN_BUILD:-build-asan}"
JOBS="${JOBS:-2}"
LOCK=/tmp/peft-build.lock

if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPEFT_SANITIZE=address,undefined
fi

start=$(date +%s)
flock "$LOCK" cmake --build "$BUILD" -j "$JOBS"
built=$(date +%s)

# A report stops the process with an error, so the test fails; leaks are reported at exit.
export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
if [ -f scripts/asan.supp ]; then export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$PWD/scripts/asan.supp}"; fi
status=0
(cd "$BUILD" && ctest --output-on-failure -j "$JOBS" ${CTEST_ARGS:-}) || status=$?
done_at=$(date +%s)

echo "test-asan: build $((built - start)) s, ctest $((done_at - built)) s, ctest exit status $status"
exit $status
