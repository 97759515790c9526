#!/usr/bin/env bash
# Tenth session, call 13: RoPE folded into the decode attention against RopeAppendKv + attention
# (LLM_CUDA_FOLD_ROPE=0), production plugin, three interleaved rounds with kernel timelines:
#   bash docs/perf/2026-11-25-h100-session10/fold_ab.sh        (carry .gpu; logs to $OUT)
set -uo pipefail
mkdir -p /tmp/g && tar -xzf .gpu/bundle.tar.gz -C /tmp/g || exit 1
export LD_LIBRARY_PATH=/tmp/g/lib LLM_BENCH_DECODE_MODES=graphs LLM_BENCH_DECODE_BATCHES=8,16,32,64
for r in 1 2 3; do
  for v in fold:1 nofold:0; do
    name=${v%%:*}$r
    LLM_CUDA_FOLD_ROPE=${v#*:} LLM_BENCH_KERNEL_TIMELINE=/tmp/tl_$name.json /tmp/g/bin/llm-bench-kernels --sections decode_step --json /tmp/$name.json > $OUT/$name.log 2>&1
    echo "$name: spans $(grep -E 'span' $OUT/$name.log | awk '{print $6}' | tr '\n' ' ') attn $(grep -E 'FlashDecodeKernel' $OUT/$name.log | awk '{print $(NF-2)}' | tr '\n' ' ') rope $(grep -E 'RopeAppendKv' $OUT/$name.log | awk '{print $(NF-2)}' | tr '\n' ' ')"
  done
done
