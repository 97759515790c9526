#!/usr/bin/env bash
# PDL of the decode chain, eager vs graphs, on / off (LLM_CUDA_PDL), with the graph's edge count.
#   bash docs/perf/2026-11-24-h100-session4/pdl_run.sh $OUT   (carry [".gpu"])
set -uo pipefail
out=$1
mkdir -p /tmp/g /tmp/pdl && tar -xzf .gpu/bundle.tar.gz -C /tmp/g
export LD_LIBRARY_PATH=/tmp/g/lib
if [ "${TESTS:-1}" = 1 ]; then
  /tmp/g/bin/kernels_gpu_tests > /tmp/pdl/kernels_gpu_tests.log 2>&1; echo "kernels_gpu_tests rc=$? $(grep -E '^\[  (PASSED|FAILED)' /tmp/pdl/kernels_gpu_tests.log | tr '\n' ' ')"
  /tmp/g/bin/model_gpu_tests > /tmp/pdl/model_gpu_tests.log 2>&1; echo "model_gpu_tests rc=$? $(grep -E '^\[  (PASSED|FAILED)' /tmp/pdl/model_gpu_tests.log | tr '\n' ' ')"
fi
for r in ${ROUNDS:-a b}; do
  for pdl in 1 0; do
    LLM_CUDA_GRAPH_DEBUG=1 LLM_CUDA_PDL=$pdl LLM_BENCH_DECODE_BATCHES=${BATCHES:-1,64} LLM_BENCH_DECODE_MODES=${MODES:-eager,graphs} \
      /tmp/g/bin/llm-bench-kernels --sections decode_step > /tmp/pdl/step_pdl${pdl}_$r.log 2>&1
    echo "pdl=$pdl $r: $(grep -E '^B[0-9]+ context' /tmp/pdl/step_pdl${pdl}_$r.log | awk '{print $1, $4, $5}' | tr '\n' ' ') $(grep -m1 'programmatic' /tmp/pdl/step_pdl${pdl}_$r.log)"
  done
done
tar -czf $out/pdl.tar.gz -C /tmp pdl
