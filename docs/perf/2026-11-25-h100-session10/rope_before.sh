#!/usr/bin/env bash
# Tenth session, call 17 (branch fold-diagnosis's plugin): the folded split attention after a
# RopeAppendKv launch (LLM_EXP_ROPE_BEFORE, timing only: q and k rotated twice) or an empty kernel
# (LLM_EXP_GAP), against main's policy and the fold everywhere; B8 / B64 (carry .gpu, logs to $OUT)
set -uo pipefail
mkdir -p /tmp/g && tar -xzf .gpu/bundle.tar.gz -C /tmp/g || exit 1
export LD_LIBRARY_PATH=/tmp/g/lib LLM_BENCH_DECODE_MODES=graphs LLM_BENCH_DECODE_BATCHES=8,64
for run in plain: fold:LLM_CUDA_FOLD_ROPE=all before:LLM_CUDA_FOLD_ROPE=all+LLM_EXP_ROPE_BEFORE=1 gap:LLM_CUDA_FOLD_ROPE=all+LLM_EXP_GAP=1; do
  name=${run%%:*}; envs=${run#*:}
  env ${envs//+/ } LLM_BENCH_KERNEL_TIMELINE=/tmp/tl_$name.json /tmp/g/bin/llm-bench-kernels --sections decode_step --json /tmp/$name.json > "$OUT/$name.log" 2>&1
  echo "$name: spans $(grep -E 'span' "$OUT/$name.log" | awk '{print $6}' | tr '\n' ' ')"
  grep -E "FlashDecodeKernel|RopeAppendKv|GapKernel" "$OUT/$name.log" | awk '{print "   ", $1, $2, $(NF-2)}'
done
