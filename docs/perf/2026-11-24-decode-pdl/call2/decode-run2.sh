#!/usr/bin/env bash
# Device call 2: GPU tests on the new build (block-table hoist), then copy+decode bench of base
# (1ccc6c6), mid (93963aa) and new, interleaved twice; split sweep on new.
set -uo pipefail
out="$1"
SANITIZE=0 ANCHOR=0 BENCH=0 bash scripts/gpu-run.sh "$out" > "$out/gpu-run.txt" 2>&1
cat "$out/gpu-run.txt"
for v in base mid; do mkdir -p /tmp/$v && tar -xzf .gpu/$v.tar.gz -C /tmp/$v; done
ln -sfn /tmp/g /tmp/new
for r in 1 2; do
  for v in base mid new; do
    echo "## round $r" >> "$out/$v.log"
    LD_LIBRARY_PATH=/tmp/$v/lib /tmp/$v/bin/llm-bench-kernels --sections copy,decode >> "$out/$v.log" 2>&1
  done
done
LLM_BENCH_DECODE_SWEEP=1 LD_LIBRARY_PATH=/tmp/g/lib /tmp/g/bin/llm-bench-kernels --sections decode > "$out/sweep.log" 2>&1
for v in base mid new; do echo "== $v"; grep -E "round|D2D|^B[0-9]" "$out/$v.log"; done
echo "== sweep"; sed -n '/split sweep/,$p' "$out/sweep.log" | grep -E "sweep|C32768|B8"
