#!/usr/bin/env bash
# Eleventh session (2026-11-25): A/B rounds of the graphed decode step with its kernel timeline, the
# bundle's plugin (new) against main's plugin (base; .gpu-base/libllm_cuda_backend.so.gz, gzipped
# for the tree limit), interleaved; carry [".gpu", ".gpu-base"]:
#   [BATCHES=1,8,16,32,64] [ROUNDS=2] [PHASES=tests,bench] [EXTRA_RUNS="name:sections:VAR=v ..."] \
#     bash docs/perf/2026-11-25-h100-session11/ab.sh $OUT
# Logs in /tmp/s11 (device_run.sh of the fourth session runs the phases), packed into
# $OUT/s11.tar.gz with summary.txt: per run and batch the step's GPU span and the in-graph means
# of flash decode, SiluMul and RopeAppendKv.
set -uo pipefail
out_dir="${1:?usage: ab.sh OUT}"
logs=/tmp/s11
mkdir -p "$logs" /tmp/plugins/base
gunzip -c .gpu-base/libllm_cuda_backend.so.gz > /tmp/plugins/base/libllm_cuda_backend.so || exit 1
batches=${BATCHES:-1,8,16,32,64}
runs=""
for r in $(seq 1 "${ROUNDS:-2}"); do
  runs+="base$r:decode_step:LD_LIBRARY_PATH=/tmp/plugins/base:/tmp/g/lib+LLM_BENCH_DECODE_BATCHES=$batches+LLM_BENCH_KERNEL_TIMELINE=$logs/tlb$r.json "
  runs+="new$r:decode_step:LLM_BENCH_DECODE_BATCHES=$batches+LLM_BENCH_KERNEL_TIMELINE=$logs/tln$r.json "
done
DEVICE_RUN_NAME=s11 PHASES="${PHASES:-tests,bench}" RUNS="$runs ${EXTRA_RUNS:-}" \
  bash docs/perf/2026-11-24-h100-session4/device_run.sh "$out_dir"
for f in "$logs"/*.log; do
  grep -q '^kernel timeline' "$f" || continue
  echo "== $(basename "$f" .log)"
  grep -E '^kernel timeline|span|FlashDecodeKernel|SiluMul|RopeAppendKv' "$f" | awk '{$1=$1; print}' |
    sed -E 's/^kernel timeline: (B[0-9]+).*/\1/; s/per step: .*span ([0-9.]+) us.*idle ([0-9.]+).*/span \1 idle \2/' | cut -c1-120
done > "$logs/summary.txt"
tar -czf "$out_dir/s11.tar.gz" -C /tmp s11
cat "$logs/summary.txt"
