#!/usr/bin/env bash
# Tenth session, call 18: Nsight Compute (--set full, details and SASS-level samples) of one graphed
# B8 attention launch, folded (LLM_CUDA_FOLD_ROPE=all) and plain; run from a copy in .gpu/
# (carry .gpu, logs to $OUT)
set -uo pipefail
mkdir -p /tmp/g && tar -xzf .gpu/bundle.tar.gz -C /tmp/g || exit 1
export LD_LIBRARY_PATH=/tmp/g/lib LLM_BENCH_DECODE_BATCHES=8 LLM_BENCH_DECODE_MODES=graphs
ncu=/usr/local/cuda/bin/ncu
for v in fold:all plain:1; do
  name=${v%%:*}
  LLM_CUDA_FOLD_ROPE=${v#*:} $ncu --kernel-name regex:FlashDecodeKernel --launch-skip 200 --launch-count 1 --set full -f -o /tmp/$name /tmp/g/bin/llm-bench-kernels --sections decode_step > $OUT/ncu_$name.log 2>&1
  $ncu --import /tmp/$name.ncu-rep --page details --csv > $OUT/ncu_${name}_details.csv 2>&1
  $ncu --import /tmp/$name.ncu-rep --page source --csv --print-source sass > /tmp/${name}_src.csv 2>&1
  gzip -c /tmp/${name}_src.csv > $OUT/ncu_${name}_source.csv.gz
  grep -E '"(Duration|Elapsed Cycles|SM Active Cycles|DRAM Throughput|L2 Hit Rate|Warp Cycles Per Issued Instruction|Registers Per Thread|Achieved Occupancy)"' $OUT/ncu_${name}_details.csv | awk -F'","' '{print "'$name'", $5, $13, $15}' | cut -c1-150
done
