#!/usr/bin/env bash
# One device call of the decode-cluster session, run from the repository root on the GPU machine with
# this script, bundle.tar.gz (this branch, scripts/gpu-bundle.sh) and base.tar.gz (llm-bench-kernels
# and the plugin at 88f409e, the branch point, plus the argmax bench section) in one carried folder:
#   bash .gpu-decode/device_run.sh $OUT
# Logs go to /tmp/session3 and are packed into $OUT/session3.tar.gz after every phase (the device
# tool returns at most 8 files). PHASES narrows the run: tests, bench, sweep, ncu, sanitize.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out_dir="${1:?usage: device_run.sh OUT}"
phases="${PHASES:-tests,bench,sweep,ncu,sanitize}"
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
  # Before / after in one call, interleaved; LLM_CUDA_DECODE_CLUSTER=0 is the new binary with the
  # merge kernel for every split count, =16 allows 16-block clusters.
  run_bench() {  # name, runner, binary, sections, env...
    local name=$1 runner=$2 binary=$3 sections=$4
    shift 4
    env "$@" LD_LIBRARY_PATH=$([ "$runner" = after ] && echo /tmp/g/lib || echo /tmp/gb/lib) \
      "$binary" --sections "$sections" --json "$logs/$name.json" > "$logs/$name.log" 2>&1
    echo "== $name: $(grep -E '^B(1|32|64) context 512 graphs' "$logs/$name.log" | awk '{print $1, $5}' | tr '\n' ' ')"
  }
  run_bench before1 before "$bench_before" decode,argmax,decode_step
  run_bench after1 after "$bench_after" decode,argmax,decode_step
  run_bench after_nocluster after "$bench_after" decode,decode_step LLM_CUDA_DECODE_CLUSTER=0 \
    LLM_BENCH_DECODE_MODES=graphs
  run_bench after_cluster16 after "$bench_after" decode,decode_step LLM_CUDA_DECODE_CLUSTER=16 \
    LLM_BENCH_DECODE_MODES=graphs
  run_bench before2 before "$bench_before" argmax,decode_step LLM_BENCH_DECODE_MODES=graphs
  run_bench after2 after "$bench_after" argmax,decode_step LLM_BENCH_DECODE_MODES=graphs
  for f in before1 after1 after_nocluster after_cluster16; do
    echo "-- $f"; grep -E "^B[0-9]+ C[0-9]+ Hq|^rows " "$logs/$f.log"
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
  {
    echo "== memcheck"
    after timeout 110 "$cs" --tool memcheck "$t" --gtest_filter='*FlashDecodeSplitTest*:*BatchSizes*:*GreedyArgmax*:*MixedBatchShortDecodes*/mma:*DecodeBatch*hd64_g8_bs16_mma*' 2>&1 | tail -4
    echo "== racecheck"
    after timeout 100 "$cs" --tool racecheck "$t" --gtest_filter='*FlashDecodeSplitTest*hd64_g8*:*FlashDecodeSplitTest*hd128_g1*:*GreedyArgmax*' 2>&1 | tail -3
    echo "== synccheck"
    after timeout 60 "$cs" --tool synccheck "$t" --gtest_filter='*FlashDecodeSplitTest*hd128_g8*:*GreedyArgmax*' 2>&1 | tail -3
    echo "== initcheck"
    after timeout 40 "$cs" --tool initcheck "$t" --gtest_filter='*FlashDecodeSplitTest*hd64_g1*' 2>&1 | tail -3
  } 2>&1 | tee "$logs/sanitizer.log"
  pack
fi
pack
