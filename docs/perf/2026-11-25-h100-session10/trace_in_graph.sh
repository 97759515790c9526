#!/usr/bin/env bash
# Tenth session: flash decode's phase trace inside the graphed decode step, from a build with
# -DLLM_CUDA_DECODE_PHASE_TRACE=ON (bundle in .gpu-trace: BUNDLE_DIR=.gpu-trace
# scripts/gpu-bundle.sh build-trace build-trace/bench/llm-bench-kernels
# build-trace/kernels/cuda/libllm_cuda_backend.so), carry [".gpu-trace"]:
#   [BATCHES=1,8,64] [RUNS="name:VAR=value ..."] bash docs/perf/2026-11-25-h100-session10/trace_in_graph.sh $OUT
set -uo pipefail
out=${1:?usage: trace_in_graph.sh OUT}
mkdir -p /tmp/gt && tar -xzf .gpu-trace/bundle.tar.gz -C /tmp/gt || exit 1
export LD_LIBRARY_PATH=/tmp/gt/lib LLM_BENCH_DECODE_MODES=graphs LLM_BENCH_DECODE_PHASE_TRACE=1
for run in ${RUNS:-cluster: merge_kernel:LLM_CUDA_DECODE_CLUSTER=0}; do
  name=${run%%:*}
  env ${run#*:} LLM_BENCH_DECODE_BATCHES=${BATCHES:-1,8,64} \
    LLM_BENCH_KERNEL_TIMELINE=/tmp/gt/tl_$name.json /tmp/gt/bin/llm-bench-kernels \
    --sections decode_step --json "$out/$name.json" > "$out/$name.log" 2>&1
  echo "== $name"
  grep -E "graphs  |flash decode phases|^  [a-z]|FlashDecode|MergeSplits|span" "$out/$name.log"
done
