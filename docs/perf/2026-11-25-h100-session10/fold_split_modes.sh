#!/usr/bin/env bash
# Tenth session, call 16: the folded split attention with and without thread-block clusters
# (production plugin; LLM_CUDA_FOLD_ROPE=all folds at every split count, LLM_CUDA_DECODE_CLUSTER=0
# merges splits with the merge kernel):  bash .../fold_split_modes.sh   (carry .gpu; logs to $OUT)
set -uo pipefail
mkdir -p /tmp/g && tar -xzf .gpu/bundle.tar.gz -C /tmp/g || exit 1
export LD_LIBRARY_PATH=/tmp/g/lib LLM_BENCH_DECODE_MODES=graphs LLM_BENCH_DECODE_BATCHES=8,16
for run in plain: fold:LLM_CUDA_FOLD_ROPE=all nocluster:LLM_CUDA_DECODE_CLUSTER=0 \
           fold_nocluster:LLM_CUDA_FOLD_ROPE=all+LLM_CUDA_DECODE_CLUSTER=0; do
  name=${run%%:*}
  envs=${run#*:}
  env ${envs//+/ } LLM_BENCH_KERNEL_TIMELINE=/tmp/tl_$name.json /tmp/g/bin/llm-bench-kernels \
    --sections decode_step --json /tmp/$name.json > "$OUT/$name.log" 2>&1
  echo "$name: spans $(grep -E 'span' "$OUT/$name.log" | awk '{print $6}' | tr '\n' ' ')"
  grep -E "FlashDecodeKernel|MergeSplits|RopeAppendKv" "$OUT/$name.log" | awk '{print "   ", $1, $2, $(NF-2)}'
done
