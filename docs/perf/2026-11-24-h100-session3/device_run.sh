#!/usr/bin/env bash
# One device call of the decode-cluster session, run from the repository root on the GPU machine with
# this script, bundle.tar.gz (this branch, scripts/gpu-bundle.sh) and base.tar.gz (llm-bench-kernels
# and the plugin at 88f409e, the branch point, plus the argmax bench section) in one carried folder:
#   bash .gpu-decode/device_run.sh $OUT
# Logs go to /tmp/session3 and are packed into $OUT/session3.tar.gz after every phase (the device
# tool returns at most 8 files). PHASES narrows the run: tests, sanitize, bench, sweep, ncu;
# BENCH_RUNS lists the benchmark runs as name:before|after:sections[:VAR=value+VAR=value].
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out_dir="${1:?usage: device_run.sh OUT}"
phases="${PHASES:-tests,sanitize,bench,sweep,ncu}"
logs=/tmp/session3
mkdir -p "$logs" /tmp/g /tmp/gb
pack() { tar -czf "$out_dir/session3.tar.gz" -C /tmp session3; }
wants() { [[ ",$phases," == *",$1,"* ]]; }
tar -xzf "$here/bundle.tar.gz" -C /tmp/g || exit 1
[ -f "$here/base.tar.gz" ] && tar -xzf "$here/base.tar.gz" -C /tmp/gb
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$logs/device.txt"
after() { LD_LIBRARY_PATH=/tmp/g/lib "$@"; }
before() { LD_LIBRARY_PATH=/tmp/gb/lib "$@"; }
bench_after=/tmp/g/bin/llm-bench-kernels
bench_before=/tmp/gb/bin/llm-bench-kernels

if wants tests; then
  after /tmp/g/bin/kernels_gpu_tests > "$logs/kernels_gpu_tests.log" 2>&1
  grep -E "^\[  (PASSED|FAILED) |tests from .* ran|FAILED" "$logs/kernels_gpu_tests.log" | head -20
  after /tmp/g/bin/model_gpu_tests > "$logs/model_gpu_tests.log" 2>&1
  grep -E "^\[  (PASSED|FAILED) |tests from .* ran|FAILED" "$logs/model_gpu_tests.log" | head -20
  pack
fi

if wants bench; then
  # Before / after in one call, interleaved. Variants of the new binary: LLM_CUDA_DECODE_CLUSTER=0
  # (merge kernel for every split count), LLM_CUDA_DECODE_VARIANT=pull / late / pull_late (pull
  # cluster merge; the old load order), LLM_CUDA_ARGMAX_BLOCKS=N (blocks per argmax row).
  run_bench() {  # name, runner, sections, env...
    local name=$1 runner=$2 sections=$3
    shift 3
    local binary=$bench_after lib=/tmp/g/lib
    if [ "$runner" = before ]; then binary=$bench_before; lib=/tmp/gb/lib; fi
    env "$@" LD_LIBRARY_PATH=$lib "$binary" --sections "$sections" --json "$logs/$name.json" \
      > "$logs/$name.log" 2>&1
    echo "== $name: $(grep -E '^B(1|32|64) context 512 graphs' "$logs/$name.log" | awk '{print $1, $5}' | tr '\n' ' ')"
  }
  default_runs="before1:before:decode,argmax,decode_step:LLM_BENCH_DECODE_MODES=eager,graphs
    after1:after:decode,argmax,decode_step:LLM_BENCH_DECODE_MODES=eager,graphs
    nocluster1:after:decode,decode_step:LLM_CUDA_DECODE_CLUSTER=0"
  for r in 2 3 4 5; do
    default_runs+=" before$r:before:decode_step after$r:after:decode_step"
    default_runs+=" nocluster$r:after:decode_step:LLM_CUDA_DECODE_CLUSTER=0"
  done
  default_runs+=" before6:before:argmax after6:after:argmax"
  read -r -a bench_runs <<< "$(echo ${BENCH_RUNS:-$default_runs})"
  for spec in "${bench_runs[@]}"; do
    IFS=':' read -r name runner sections envs <<< "$spec"
    # shellcheck disable=SC2086
    run_bench "$name" "$runner" "$sections" LLM_BENCH_DECODE_MODES=${MODES:-graphs} ${envs//+/ }
  done
  for f in "$logs"/*.log; do
    grep -qE "^B[0-9]+ C[0-9]+ Hq|^rows " "$f" || continue
    echo "-- $(basename "$f" .log)"; grep -E "^B[0-9]+ C[0-9]+ Hq|^rows " "$f"
  done
  pack
fi

if wants sweep; then
  after env LLM_BENCH_DECODE_SWEEP=1 "$bench_after" --sections decode > "$logs/sweep.log" 2>&1
  sed -n '/decode split sweep/,$p' "$logs/sweep.log"
  pack
fi

if wants ncu; then
  ncu_step() {  # name, runner, binary
    env LLM_BENCH_PROFILE_STEP=1 LLM_BENCH_DECODE_BATCHES=1,32 LLM_BENCH_DECODE_MODES=graphs \
      LD_LIBRARY_PATH=$([ "$2" = after ] && echo /tmp/g/lib || echo /tmp/gb/lib) \
      timeout 150 ncu --profile-from-start off --clock-control none --cache-control none \
      --metrics gpu__time_duration.sum --csv "$3" --sections decode_step > "$logs/ncu_$1.csv" 2> "$logs/ncu_$1.err"
    echo "== ncu $1: rc $?"
  }
  ncu_step after after "$bench_after"
  ncu_step before before "$bench_before"
  pack
fi

if wants sanitize; then
  cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  t=/tmp/g/bin/kernels_gpu_tests
  sanitize() {  # name, seconds, tool, filter
    after timeout "$2" "$cs" --tool "$3" --print-limit 8 "$t" --gtest_filter="$4" > "$logs/san_$1.log" 2>&1
    echo "== $1 ($3, rc $?): $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|tests ran|PASSED|FAILED  \]' "$logs/san_$1.log" | tr '\n' ' ')"
    pack
  }
  sanitize memcheck_splits 150 memcheck '*FlashDecodeSplitTest*'
  sanitize memcheck_argmax 60 memcheck '*GreedyArgmax*:*SampleMatches*'
  sanitize memcheck_batches 120 memcheck '*BatchSizes*:*MixedBatchShortDecodes*:*DecodeBatch*hd64_g8_bs16_mma*:*DecodeBatch*hd128_g4_bs32_wgmma*'
  sanitize racecheck 120 racecheck '*FlashDecodeSplitTest*hd64_g8*:*FlashDecodeSplitTest*hd128_g1*:*GreedyArgmax*'
  sanitize synccheck 60 synccheck '*FlashDecodeSplitTest*hd128_g8*:*GreedyArgmax*:*BatchSizes*'
  sanitize initcheck 60 initcheck '*FlashDecodeSplitTest*hd64_g1*:*GreedyArgmax*'
  pack
fi
pack
