#!/usr/bin/env bash
# Builds s3gate four ways and tests each:
#  - normal, and with ASan+UBSan: every test (the Catch2 unit tests, the
#    integration tests with the real binary and real peers, and the replay of
#    every fuzz corpus, fuzz.replay.*);
#  - with ThreadSanitizer: the tests that run several workers, reloads and the
#    access-log thread (TSAN_TESTS below);
#  - with clang and libFuzzer: each fuzz harness for S3GATE_FUZZ_SECONDS
#    (default 10) from its seeds; any crash, hang or sanitizer report fails.
#    The inputs found stay in build-fuzz/fuzz-run/NAME/corpus for the next
#    run; a failing input is written there as crash-*, timeout-* or oom-*.
# Each stage prints how long it took.
# Usage: test/run-all.sh            (from the repository root or anywhere)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
jobs="$(nproc)"
fuzz_seconds="${S3GATE_FUZZ_SECONDS:-10}"

# The ThreadSanitizer selection: the unit tests that start threads, and the
# integration tests with several workers, SIGHUP reloads, drains and many
# tunnels at once.
TSAN_TARGETS=(s3gate test_access_log test_metrics)
TSAN_TESTS='^(unit\.test_access_log\.|unit\.test_metrics\.|integration\.test_nlb$|integration\.test_metrics$|integration\.test_connect$)'

stage_start=0
stage() {  # name
  stage_start=$SECONDS
  echo "== $1"
}
took() {
  echo "   ($((SECONDS - stage_start)) s)"
}

configure() {  # dir, cmake args...
  local dir="$1"
  shift
  cmake -S "$root" -B "$root/$dir" -G Ninja "$@" >/dev/null
}

stage "build: normal"
configure build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$root/build" -j "$jobs"
took
stage "build: ASan+UBSan"
configure build-asan -DCMAKE_BUILD_TYPE=Debug -DS3GATE_SANITIZE=ON
cmake --build "$root/build-asan" -j "$jobs"
took
stage "build: ThreadSanitizer (${TSAN_TARGETS[*]})"
configure build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DS3GATE_SANITIZE_THREAD=ON
cmake --build "$root/build-tsan" -j "$jobs" --target "${TSAN_TARGETS[@]}"
took
stage "build: libFuzzer harnesses (clang)"
configure build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DS3GATE_FUZZ=ON -DS3GATE_BUILD_TESTS=OFF
cmake --build "$root/build-fuzz" -j "$jobs" --target fuzz
took

status=0
stage "style: every C++ file follows .clang-format"
(cd "$root" && git ls-files '*.cpp' '*.h' | xargs clang-format --dry-run --Werror) || status=1
stage "tests: normal build"
(cd "$root/build" && ctest --output-on-failure -j "$jobs") || status=1
took
stage "tests: ASan+UBSan build"
(
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  # bench.smoke checks the benchmark's scripts, which the normal build covers;
  # figures from a sanitized binary mean nothing.
  cd "$root/build-asan" && ctest --output-on-failure -j "$jobs" -E '^bench\.'
) || status=1
took
stage "tests: ThreadSanitizer build"
(
  export TSAN_OPTIONS="suppressions=$root/test/tsan.supp second_deadlock_stack=1"
  cd "$root/build-tsan" && ctest --output-on-failure -j "$jobs" -R "$TSAN_TESTS"
) || status=1
took
stage "fuzz: each harness for ${fuzz_seconds} s, ${jobs} at a time"
fuzz_one() {  # name, seed directories...
  local name="$1"
  shift
  local work="$root/build-fuzz/fuzz-run/$name"
  mkdir -p "$work/corpus"
  local args=("$work/corpus" "$@")
  if [ -f "$root/test/fuzz/$name.dict" ]; then
    args+=("-dict=$root/test/fuzz/$name.dict")
  fi
  # -timeout: one input running 10 s is a hang. The outer timeout ends a run
  # that does not stop by itself (a sanitizer busy with a huge heap).
  local rc=0
  (
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
    cd "$work" && timeout -k 10 $((fuzz_seconds + 120)) "$root/build-fuzz/test/fuzz/$name" \
      "${args[@]}" -max_total_time="$fuzz_seconds" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$work/" -print_final_stats=1 >"$work/log" 2>&1
  ) || rc=$?
  echo "$rc" >"$work/rc"
}
fuzz_names=()
while read -r name seeds; do
  read -r -a seed_dirs <<<"$seeds"
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  rm -f "$root/build-fuzz/fuzz-run/$name/rc"
  fuzz_one "$name" "${seed_dirs[@]}" &
  fuzz_names+=("$name")
done <"$root/build-fuzz/test/fuzz/fuzz-targets.txt"
wait || true
for name in "${fuzz_names[@]}"; do
  work="$root/build-fuzz/fuzz-run/$name"
  if [ "$(cat "$work/rc" 2>/dev/null)" = 0 ]; then
    runs="$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$work/log" | grep -o '[0-9]*$')"
    echo "   $name: $runs runs, no failure"
  else
    echo "   $name FAILED; the input is in $work/ (crash-*, timeout-*, oom-*):"
    tail -n 60 "$work/log"
    status=1
  fi
done
took
exit $status
