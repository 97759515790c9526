#!/usr/bin/env bash
# Tenth session: Nsight Compute on the graphed B1 decode step's flash-decode launch (cluster
# merge), details and SASS-level samples, cold caches per replay (ncu's base clocks: its durations
# run ~1.3x the graphed ones):
#   bash docs/perf/2026-11-25-h100-session10/ncu_attention.sh $OUT      (carry .gpu)
set -uo pipefail
out=${1:?usage: ncu_attention.sh OUT}
mkdir -p /tmp/g && tar -xzf .gpu/bundle.tar.gz -C /tmp/g || exit 1
export LD_LIBRARY_PATH=/tmp/g/lib LLM_BENCH_DECODE_BATCHES=${BATCH:-1} LLM_BENCH_DECODE_MODES=graphs
ncu=/usr/local/cuda/bin/ncu
common=(--kernel-name regex:FlashDecodeKernel --launch-skip 200 --launch-count 1 --set full
        --import-source yes)
$ncu "${common[@]}" -f -o /tmp/attention /tmp/g/bin/llm-bench-kernels --sections decode_step \
  > "$out/ncu_run.log" 2>&1
echo "ncu rc=$?"
$ncu --import /tmp/attention.ncu-rep --page details --csv > "$out/ncu_details.csv" 2>&1
$ncu --import /tmp/attention.ncu-rep --page source --csv --print-source sass > /tmp/ncu_source.csv 2>&1
gzip -c /tmp/ncu_source.csv > "$out/ncu_source.csv.gz"
cp /tmp/attention.ncu-rep "$out/" 2>/dev/null
head -c 600 /tmp/ncu_source.csv; echo; wc -l /tmp/ncu_source.csv
grep -E "Duration|Elapsed Cycles|Registers|Achieved Occupancy|Warp Cycles Per Issued" "$out/ncu_details.csv" | head -12
