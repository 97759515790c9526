#!/usr/bin/env bash
# Builds and runs the unit tests under sanitizers, each configuration in its own build directory:
#   asan-ubsan (build-asan-ubsan): kvcache, engine, CPU kernels, model (loader + transformer) and
#                                  text tests under AddressSanitizer + UndefinedBehaviorSanitizer;
#   tsan       (build-tsan):       engine tests and the CPU kernels (thread pool) under
#                                  ThreadSanitizer; the service tests too with LLM_TSAN_SERVICE=1.
# The service tests are opt-in because Debian's gRPC, Abseil and protobuf are not instrumented: TSan
# cannot see gRPC's internal synchronisation and reports thousands of races between a reactor's
# methods and its OnDone/delete on gRPC threads (docs/RELIABILITY.md). A gating TSan run of the
# service needs those libraries built with -fsanitize=thread.
# Both use the default compiler (gcc 12 on Debian 12: its libasan/libubsan/libtsan come with it) and
# build the CPU backend only. Any sanitizer report fails the run (halt_on_error).
#
#   ./scripts/sanitizers.sh               # both
#   ./scripts/sanitizers.sh asan-ubsan    # one of them
#   LLM_JOBS=2 (default) bounds the build's parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=${LLM_JOBS:-2}
configs=("$@")
if ((${#configs[@]} == 0)); then configs=(asan-ubsan tsan); fi

# The GoogleTest executables per configuration (those missing from the tree are skipped).
asan_targets=(kvcache_tests engine_tests kernels_cpu_tests model_loader_tests transformer_tests
  text_tests)
tsan_targets=(engine_tests kernels_cpu_tests)
if [[ -n ${LLM_TSAN_SERVICE:-} ]]; then tsan_targets+=(service_tests); fi

existing_targets() {
  local build_dir=$1
  shift
  local available
  available=$(cmake --build "$build_dir" --target help | sed -n 's/^\([A-Za-z0-9_]*\): .*/\1/p')
  for target in "$@"; do
    if grep -qx "$target" <<<"$available"; then echo "$target"; fi
  done
}

run_config() {
  local preset=$1 build_dir=$2
  shift 2
  cmake --preset "$preset" >/dev/null
  mapfile -t targets < <(existing_targets "$build_dir" "$@")
  echo "sanitizers[$preset]: building ${targets[*]}"
  cmake --build "$build_dir" -j "$jobs" --target "${targets[@]}"
  # The executables run directly (not through ctest) so that one sanitizer log covers a suite.
  local failed=()
  for target in "${targets[@]}"; do
    local binary
    binary=$(find "$build_dir/tests" -type f -name "$target" -perm -u+x | head -1)
    echo "sanitizers[$preset]: running $binary"
    if ! (cd "$(dirname "$binary")" && "./$target" --gtest_brief=1) >"$build_dir/$target.log" 2>&1; then
      failed+=("$target")
      tail -60 "$build_dir/$target.log"
    else
      tail -3 "$build_dir/$target.log"
    fi
  done
  if ((${#failed[@]} > 0)); then
    echo "sanitizers[$preset]: FAILED: ${failed[*]} (logs: $build_dir/<suite>.log)"
    return 1
  fi
  echo "sanitizers[$preset]: all suites passed"
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/scripts/tsan-suppressions.txt}

status=0
for config in "${configs[@]}"; do
  case $config in
    asan-ubsan) run_config asan-ubsan build-asan-ubsan "${asan_targets[@]}" || status=1 ;;
    # OpenBLAS's own GEMM threads synchronise in uninstrumented code: TSan would report our thread
    # pool reading what they wrote. One BLAS thread keeps every GEMM on the calling thread.
    tsan) OPENBLAS_NUM_THREADS=1 run_config tsan build-tsan "${tsan_targets[@]}" || status=1 ;;
    *) echo "unknown configuration $config (asan-ubsan, tsan)" >&2; exit 2 ;;
  esac
done
exit $status
