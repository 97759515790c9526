#!/usr/bin/env bash
# Device call for the decode work: GPU tests + copy/decode bench (new), baseline bench (HEAD~ build,
# .gpu/base.tar.gz) interleaved twice, PDL off, split sweep, graphs decode step.
set -uo pipefail
out="$1"
SANITIZE=0 ANCHOR=0 SECTIONS=copy,decode bash scripts/gpu-run.sh "$out" > "$out/gpu-run.txt" 2>&1
cat "$out/gpu-run.txt"
mkdir -p /tmp/b && tar -xzf .gpu/base.tar.gz -C /tmp/b
nb() { LD_LIBRARY_PATH=/tmp/g/lib "$@"; }
for r in 1 2; do
  LD_LIBRARY_PATH=/tmp/b/lib /tmp/b/bin/llm-bench-kernels --sections copy,decode > "$out/base$r.log" 2>&1
  nb /tmp/g/bin/llm-bench-kernels --sections copy,decode > "$out/new$r.log" 2>&1
done
LLM_CUDA_DECODE_PDL=0 nb /tmp/g/bin/llm-bench-kernels --sections copy,decode > "$out/nopdl.log" 2>&1
LLM_BENCH_DECODE_SWEEP=1 nb /tmp/g/bin/llm-bench-kernels --sections decode > "$out/sweep.log" 2>&1
timeout 90 env LD_LIBRARY_PATH=/tmp/g/lib /tmp/g/bin/llm-bench-kernels --sections decode_step > "$out/step.log" 2>&1
echo "step rc $?"
for f in base1 new1 base2 new2 nopdl; do echo "== $f"; grep -E "D2D|^B[0-9]" "$out/$f.log" ; done
echo "== sweep"; sed -n '/split sweep/,$p' "$out/sweep.log"
echo "== step"; grep -iE "B1|B32|B64|error|fail" "$out/step.log" | head
