#!/usr/bin/env bash
# Tenth session, call 15: flash decode's head_dim 64 pipeline depth (kStages 3 = main, 4, 5), the
# plugins in .gpu-base/plugins.tar.gz (s3/ s4/ s5/; carry .gpu and .gpu-base), interleaved rounds with timelines:
#   bash docs/perf/2026-11-25-h100-session10/stages_ab.sh        (logs to $OUT)
set -uo pipefail
mkdir -p /tmp/g /tmp/gb && tar -xzf .gpu/bundle.tar.gz -C /tmp/g && tar -xzf .gpu-base/plugins.tar.gz -C /tmp/gb || exit 1
export LLM_BENCH_DECODE_MODES=graphs LLM_BENCH_DECODE_BATCHES=${BATCHES:-8,32,64}
for r in 1 2; do
  for s in 3 4 5; do
    name=s$s-$r
    LD_LIBRARY_PATH=/tmp/gb/s$s:/tmp/g/lib LLM_BENCH_KERNEL_TIMELINE=/tmp/tl_$name.json \
      /tmp/g/bin/llm-bench-kernels --sections decode_step --json /tmp/$name.json > $OUT/$name.log 2>&1
    echo "$name: spans $(grep -E 'span' $OUT/$name.log | awk '{print $6}' | tr '\n' ' ') attn $(grep -E 'FlashDecodeKernel' $OUT/$name.log | awk '{print $(NF-2)}' | tr '\n' ' ')"
  done
done
