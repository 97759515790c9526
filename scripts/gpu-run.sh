#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, with the bundle made by scripts/gpu-bundle.sh:
# unpacks it, runs the GPU tests, compute-sanitizer on a small grid, the kernel benchmarks and the
# torch SDPA anchor, and compares them. Logs and JSON go to $OUT (or the first argument).
# Device-tool command used for docs/PERFORMANCE.md:  bash scripts/gpu-run.sh   (carry: [".gpu"])
#   SECTIONS=copy,prefill,decode,decode_step,variants  (default: all but variants)
#   SANITIZE=0  skips compute-sanitizer.
set -uo pipefail
out="${1:-${OUT:-gpu-results}}"
mkdir -p "$out" /tmp/g
tar -xzf .gpu/bundle.tar.gz -C /tmp/g || exit 1
export LD_LIBRARY_PATH=/tmp/g/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$out/device.txt"

/tmp/g/bin/kernels_gpu_tests > "$out/gpu_tests.log" 2>&1
grep -E "^\[  (PASSED|FAILED) |tests from .* ran" "$out/gpu_tests.log"
if [ -x /tmp/g/bin/model_gpu_tests ]; then
  /tmp/g/bin/model_gpu_tests > "$out/model_tests.log" 2>&1
  grep -E "^\[  (PASSED|FAILED) |tests from .* ran" "$out/model_tests.log"
fi

if [ "${SANITIZE:-1}" != 0 ]; then
  cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  t=/tmp/g/bin/kernels_gpu_tests
  {
    timeout 200 "$cs" --tool memcheck "$t" --gtest_filter='*hd128_g4_bs16*:*hd64_g8_bs32*:*hd128_g1_bs64*:SmallOps*:*Generic*' 2>&1 | tail -3
    timeout 150 "$cs" --tool racecheck "$t" --gtest_filter='*hd128_g2_bs16*:*hd64_g4_bs32*' 2>&1 | tail -2
    timeout 100 "$cs" --tool synccheck "$t" --gtest_filter='*hd128_g8_bs32*' 2>&1 | tail -2
    timeout 100 "$cs" --tool initcheck "$t" --gtest_filter='*hd64_g2_bs16*' 2>&1 | tail -2
  } > "$out/sanitizer.log" 2>&1
  cat "$out/sanitizer.log"
fi

/tmp/g/bin/llm-bench-kernels --json "$out/bench.json" \
  --sections "${SECTIONS:-copy,prefill,decode,decode_step}" > "$out/bench.log" 2>&1
PYTHONUNBUFFERED=1 python3 bench/sdpa_anchor.py --json "$out/sdpa.json" > "$out/sdpa.log" 2>&1
python3 bench/compare.py "$out/bench.json" "$out/sdpa.json" | tee "$out/compare.md"
