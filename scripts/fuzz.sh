#!/usr/bin/env bash
# Builds the libFuzzer targets (clang-14, ASan + UBSan; the "fuzz" CMake preset) and fuzzes each one
# for a bounded time, starting from the committed seed corpus. Exits non-zero when a target crashes;
# the crashing input is left in $LLM_FUZZ_ARTIFACTS (reproduce: build-fuzz/fuzz/<target> <file>).
#
#   ./scripts/fuzz.sh                          # every target, 60 s each (CI-sized)
#   LLM_FUZZ_SECONDS=600 ./scripts/fuzz.sh     # a longer campaign
#   ./scripts/fuzz.sh model_config_fuzzer      # some targets only
#   LLM_FUZZ_REPLAY_ONLY=1 ./scripts/fuzz.sh   # only replay the committed corpora (seconds)
#
# New inputs that add coverage go to build-fuzz/fuzz/scratch-corpus/<target>, never into the
# committed corpus; to keep one (say, a fixed crash), copy it into fuzz/corpus/<target>/ by hand.
# Needs clang-14, libclang-rt-14-dev and llvm-14 (llvm-symbolizer for readable stacks).
set -euo pipefail
cd "$(dirname "$0")/.."

# The fuzzers' own toolchain (Debian 12 packages), installed here rather than in deploy/install-deps.sh
# so that the server's quickstart does not pull clang.
fuzz_packages=(clang-14 libclang-rt-14-dev llvm-14)
missing=()
for p in "${fuzz_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  echo "fuzz: installing ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

seconds=${LLM_FUZZ_SECONDS:-60}
jobs=${LLM_JOBS:-2}
build_dir=build-fuzz
artifacts=${LLM_FUZZ_ARTIFACTS:-$build_dir/fuzz/artifacts}
all_targets=(safetensors_header_fuzzer model_config_fuzzer request_validation_fuzzer wire_request_fuzzer)
targets=("$@")
if ((${#targets[@]} == 0)); then targets=("${all_targets[@]}"); fi

cmake --preset fuzz >/dev/null
cmake --build "$build_dir" -j "$jobs" --target "${targets[@]}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if [[ -z ${ASAN_SYMBOLIZER_PATH:-} && -x /usr/lib/llvm-14/bin/llvm-symbolizer ]]; then
  export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
fi
mkdir -p "$artifacts"

failed=()
for target in "${targets[@]}"; do
  binary=$build_dir/fuzz/$target
  corpus=fuzz/corpus/$target
  dictionary=fuzz/dictionaries/$target.dict
  scratch=$build_dir/fuzz/scratch-corpus/$target
  mkdir -p "$scratch"
  flags=(-rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix="$artifacts/$target-")
  if [[ -f $dictionary ]]; then flags+=(-dict="$dictionary"); fi
  log=$build_dir/fuzz/$target.log
  if [[ -n ${LLM_FUZZ_REPLAY_ONLY:-} ]]; then
    echo "fuzz: replaying $corpus"
    cmd=("$binary" "${flags[@]}" -runs=0 "$corpus")
  else
    echo "fuzz: $target for ${seconds}s (log: $log)"
    cmd=("$binary" "${flags[@]}" -max_total_time="$seconds" "$scratch" "$corpus")
  fi
  if "${cmd[@]}" >"$log" 2>&1; then
    grep -E "^stat::number_of_executed_units|^#[0-9]+ +DONE" "$log" | tail -2 || true
  else
    echo "fuzz: $target FAILED; last lines of $log:"
    tail -40 "$log"
    failed+=("$target")
  fi
done

if ((${#failed[@]} > 0)); then
  echo "fuzz: crashes in ${failed[*]}; inputs under $artifacts"
  exit 1
fi
echo "fuzz: no crashes in ${targets[*]}"
