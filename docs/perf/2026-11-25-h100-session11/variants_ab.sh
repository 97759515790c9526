#!/usr/bin/env bash
# Eleventh session: interleaved rounds of main's plugin (base, .gpu-base), the bundle's (new) and a
# variant plugin (.gpu-mut/libllm_cuda_backend.so.gz: here the same code without RopeAppendKv's
# LetDependentsStart), graphed decode steps with kernel timelines; carry .gpu, .gpu-base, .gpu-mut:
#   [BATCHES=5,8,16,32] [ROUNDS=2] bash docs/perf/2026-11-25-h100-session11/variants_ab.sh $OUT
set -uo pipefail
mkdir -p /tmp/plugins/var && gunzip -c .gpu-mut/libllm_cuda_backend.so.gz > /tmp/plugins/var/libllm_cuda_backend.so
batches=${BATCHES:-5,8,16,32}
runs=""
for r in $(seq 1 "${ROUNDS:-2}"); do
  runs+="var$r:decode_step:LD_LIBRARY_PATH=/tmp/plugins/var:/tmp/g/lib+LLM_BENCH_DECODE_BATCHES=$batches+LLM_BENCH_KERNEL_TIMELINE=/tmp/s11/tlv$r.json "
done
EXTRA_RUNS="$runs" BATCHES=$batches ROUNDS=${ROUNDS:-2} PHASES=${PHASES:-tests,bench} \
  bash docs/perf/2026-11-25-h100-session11/ab.sh "$1"
