#!/usr/bin/env bash
# Checks that each program resolves libtorch from the libtorch CMake configured (the wheel in .venv
# by default), never from another copy on the system such as Debian's /usr/lib libtorch 1.13.
# Usage: links_libtorch.sh TORCH_INSTALL_PREFIX PROGRAM...
set -euo pipefail
prefix="$(realpath "$1")"; shift
status=0
for program in "$@"; do
  for lib in libtorch.so libtorch_cpu.so libc10.so; do
    path="$(ldd "$program" | awk -v l="$lib" '$1 == l { print $3 }')"
    if [ -z "$path" ]; then
      echo "FAIL $program: $lib is not among its libraries (ldd)"; status=1; continue
    fi
    real="$(realpath "$path")"
    case "$real" in
      "$prefix"/*) echo "ok   $program: $lib -> $real" ;;
      *) echo "FAIL $program: $lib resolves to $real, outside the configured libtorch $prefix"; status=1 ;;
    esac
  done
done
exit $status
