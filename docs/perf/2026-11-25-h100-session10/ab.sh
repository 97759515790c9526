#!/usr/bin/env bash
# Tenth session (2026-11-25): A/B rounds of the graphed decode step with its kernel timeline, the
# bundle's plugin (new) against main's plugin in .gpu-base (base), interleaved:
#   BATCHES=8,64 ROUNDS=3 [PHASES=tests,sanitize,bench] [EXTRA_RUNS="name:sections:VAR=v ..."] bash docs/perf/2026-11-25-h100-session10/ab.sh $OUT
# (device_run.sh of the fourth session does the phases; logs in /tmp/s10, packed into $OUT).
set -uo pipefail
batches=${BATCHES:-8,64}
runs=""
for r in $(seq 1 "${ROUNDS:-3}"); do
  runs+="base$r:decode_step:LD_LIBRARY_PATH=$PWD/.gpu-base:/tmp/g/lib+LLM_BENCH_DECODE_BATCHES=$batches+LLM_BENCH_KERNEL_TIMELINE=/tmp/s10/tlb$r.json "
  runs+="new$r:decode_step:LLM_BENCH_DECODE_BATCHES=$batches+LLM_BENCH_KERNEL_TIMELINE=/tmp/s10/tln$r.json "
done
DEVICE_RUN_NAME=s10 RUNS="$runs ${EXTRA_RUNS:-}" bash docs/perf/2026-11-24-h100-session4/device_run.sh "$1"
