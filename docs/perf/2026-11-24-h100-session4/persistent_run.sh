#!/usr/bin/env bash
# Persistent batch-1 decode on the GPU machine (carry [".gpu"], bundle from scripts/gpu-bundle.sh):
#   [TEST_FILTER=...] [BENCH=1] [TRACE=1] [FULL=1] bash docs/perf/2026-11-24-h100-session4/persistent_run.sh $OUT
# Logs in $OUT/pd.tar.gz; summaries echoed.
set -uo pipefail
out=$1
mkdir -p /tmp/g /tmp/pd && tar -xzf .gpu/bundle.tar.gz -C /tmp/g
export LD_LIBRARY_PATH=/tmp/g/lib
timeout 300 /tmp/g/bin/model_gpu_tests --gtest_filter="${TEST_FILTER:-*Persistent*}" > /tmp/pd/persistent_test.log 2>&1
echo "persistent test rc=$?"; grep -E "^\[  (PASSED|FAILED)|relative error <=|Failure" /tmp/pd/persistent_test.log | head -20
if [ "${TRACE:-1}" = 1 ]; then
  for f in ${LOOKAHEAD:-256}; do
    env ${TRACE_ENV:-} LLM_CUDA_PERSISTENT_LOOKAHEAD_KB=$f LLM_CUDA_PERSISTENT_TRACE=1 LLM_BENCH_DECODE_BATCHES=1 LLM_BENCH_DECODE_MODES=graphs timeout 120 \
      /tmp/g/bin/llm-bench-kernels --sections decode_step > /tmp/pd/trace_$f.log 2>&1
    echo "lookahead $f KB: trace rc=$?"; grep -A18 "persistent decode trace" /tmp/pd/trace_$f.log | tail -19; grep -E "^B1" /tmp/pd/trace_$f.log
  done
fi
if [ "${BENCH:-1}" = 1 ]; then
  for r in a b; do
    for pd in 1 0; do
      LLM_CUDA_PERSISTENT_DECODE=$pd LLM_BENCH_DECODE_BATCHES=1 LLM_BENCH_DECODE_MODES=graphs timeout 120 \
        /tmp/g/bin/llm-bench-kernels --sections decode_step > /tmp/pd/step_pd${pd}_$r.log 2>&1
      echo "pd=$pd $r rc=$? $(grep -E '^B1 ' /tmp/pd/step_pd${pd}_$r.log)"
    done
  done
fi
if [ "${FULL:-1}" = 1 ]; then
  timeout 300 /tmp/g/bin/model_gpu_tests > /tmp/pd/model_gpu_tests.log 2>&1
  echo "model_gpu_tests rc=$?"; grep -E "^\[  (PASSED|FAILED)" /tmp/pd/model_gpu_tests.log | head
fi
tar -czf $out/pd.tar.gz -C /tmp pd
