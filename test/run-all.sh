#!/usr/bin/env bash
# Builds s3gate twice (normal, and with ASan+UBSan) and runs every test in both:
# the Catch2 unit tests and the integration tests (the real binary, real peers).
# Usage: test/run-all.sh            (from the repository root or anywhere)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
jobs="$(nproc)"

build() {  # dir, extra cmake args...
  local dir="$1"
  shift
  cmake -S "$root" -B "$root/$dir" -G Ninja "$@" >/dev/null
  cmake --build "$root/$dir" -j "$jobs"
}

build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
build build-asan -DCMAKE_BUILD_TYPE=Debug -DS3GATE_SANITIZE=ON

status=0
echo "== style: every C++ file follows .clang-format"
(cd "$root" && git ls-files '*.cpp' '*.h' | xargs clang-format --dry-run --Werror) || status=1
echo "== tests: normal build"
(cd "$root/build" && ctest --output-on-failure -j "$jobs") || status=1
echo "== tests: ASan+UBSan build"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
(cd "$root/build-asan" && ctest --output-on-failure -j "$jobs") || status=1
exit $status
