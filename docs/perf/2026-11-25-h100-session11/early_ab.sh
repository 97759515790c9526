#!/usr/bin/env bash
# Eleventh session (2026-11-25): early launches (kernels/cuda/early_launch.cuh). One device call,
# from the repository root, carry [".gpu", ".gpu-base", ".gpu-mut"]:
#   .gpu       bundle of build-graphs (scripts/gpu-bundle.sh) with the early launches
#   .gpu-base  main's plugin before them (libllm_cuda_backend.so.gz, gzipped for the tree limit)
#   .gpu-mut   the plugin with WaitForPrecedingGrid made a no-op (a mutant the test must catch)
#   [PHASES=mutant,tests,bench] [BATCHES=1,8,16,32,64] [ROUNDS=2] bash docs/perf/2026-11-25-h100-session11/early_ab.sh $OUT
# Logs in /tmp/s11, packed into $OUT/s11.tar.gz (device_run.sh of the fourth session runs the
# tests and the bench rounds: base / new / new with LLM_CUDA_EARLY_LAUNCH=0, interleaved).
set -uo pipefail
out_dir="${1:?usage: early_ab.sh OUT}"
phases="${PHASES:-mutant,tests,bench}"
logs=/tmp/s11
mkdir -p "$logs" /tmp/g
tar -xzf .gpu/bundle.tar.gz -C /tmp/g || exit 1
for p in base mut; do
  mkdir -p /tmp/plugins/$p && gunzip -c .gpu-$p/libllm_cuda_backend.so.gz > /tmp/plugins/$p/libllm_cuda_backend.so
done
if [[ ",$phases," == *",mutant,"* ]]; then
  LD_LIBRARY_PATH=/tmp/plugins/mut:/tmp/g/lib /tmp/g/bin/kernels_gpu_tests \
    --gtest_filter='EarlyLaunch*' > "$logs/mutant.log" 2>&1
  echo "mutant (must fail): rc=$?"; grep -E 'differ between|^\[  (PASSED|FAILED)' "$logs/mutant.log" | head -8
  LD_LIBRARY_PATH=/tmp/g/lib /tmp/g/bin/kernels_gpu_tests \
    --gtest_filter='EarlyLaunch*:AttentionRopeFold*' > "$logs/early_test.log" 2>&1
  echo "early launch + fold tests: rc=$?"; grep -E 'differ between|^\[  (PASSED|FAILED)' "$logs/early_test.log" | head -8
fi
batches=${BATCHES:-1,8,16,32,64}
runs=""
for r in $(seq 1 "${ROUNDS:-2}"); do
  runs+="base$r:decode_step:LD_LIBRARY_PATH=/tmp/plugins/base:/tmp/g/lib+LLM_BENCH_DECODE_BATCHES=$batches+LLM_BENCH_KERNEL_TIMELINE=/tmp/s11/tlb$r.json "
  runs+="new$r:decode_step:LLM_BENCH_DECODE_BATCHES=$batches+LLM_BENCH_KERNEL_TIMELINE=/tmp/s11/tln$r.json "
  runs+="off$r:decode_step:LLM_CUDA_EARLY_LAUNCH=0+LLM_BENCH_DECODE_BATCHES=$batches+LLM_BENCH_KERNEL_TIMELINE=/tmp/s11/tlo$r.json "
done
rest=$(echo "$phases" | tr ',' '\n' | grep -v mutant | paste -sd, -)
[ -n "$rest" ] && DEVICE_RUN_NAME=s11 PHASES="$rest" RUNS="$runs ${EXTRA_RUNS:-}" \
  bash docs/perf/2026-11-24-h100-session4/device_run.sh "$out_dir"
# GPU span per step and the attention / SwiGLU / RoPE kernels' in-graph means, per run and batch
for f in "$logs"/*.log; do
  case "$f" in *base*|*new*|*off*) ;; *) continue ;; esac
  echo "== $(basename "$f" .log)"
  grep -E '^kernel timeline|span|FlashDecodeKernel|SiluMul|RopeAppendKv' "$f" | awk '{$1=$1; print}' | cut -c1-150
done > "$logs/summary.txt"
tar -czf "$out_dir/s11.tar.gz" -C /tmp s11
cat "$logs/summary.txt" | head -150
