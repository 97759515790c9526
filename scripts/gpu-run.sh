#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, with the bundle made by scripts/gpu-bundle.sh:
# unpacks it, runs the GPU tests, compute-sanitizer on a small grid, the kernel benchmarks and the
# torch SDPA anchor, and compares them. Logs and JSON go to $OUT (or the first argument).
# Device-tool command used for docs/PERFORMANCE.md:  bash scripts/gpu-run.sh   (carry: [".gpu"])
#   SECTIONS=copy,prefill,decode,decode_step,variants  (default: all but variants)
#   SANITIZE=0  skips compute-sanitizer; TESTS=0 the GPU tests (KERNEL_TESTS=0 only kernels_gpu_tests); BENCH=0 llm-bench-kernels;
#   ANCHOR=0 the torch SDPA anchor and the comparison.
#   SERVER=1  (bundle made with SERVER=1) end to end: llm-server --backend=cuda on models/default in
#   the background, wait for health, llm-client smoke and generate, llm-bench with 64 concurrent
#   streams for ${BENCH_SECONDS:-15} s; logs server.log, client.log, llm_bench.{log,json}.
set -uo pipefail
out="${1:-${OUT:-gpu-results}}"
mkdir -p "$out" /tmp/g
tar -xzf .gpu/bundle.tar.gz -C /tmp/g || exit 1
export LD_LIBRARY_PATH=/tmp/g/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$out/device.txt"

if [ "${TESTS:-1}" != 0 ]; then
  if [ "${KERNEL_TESTS:-1}" != 0 ]; then
    /tmp/g/bin/kernels_gpu_tests > "$out/gpu_tests.log" 2>&1
    grep -E "^\[  (PASSED|FAILED) |tests from .* ran" "$out/gpu_tests.log"
  fi
  if [ -x /tmp/g/bin/model_gpu_tests ]; then
    /tmp/g/bin/model_gpu_tests > "$out/model_tests.log" 2>&1
    grep -E "^\[  (PASSED|FAILED) |tests from .* ran|FAILED|Failure" "$out/model_tests.log"
  fi
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

if [ "${BENCH:-1}" != 0 ]; then
  /tmp/g/bin/llm-bench-kernels --json "$out/bench.json" \
    --sections "${SECTIONS:-copy,prefill,decode,decode_step}" > "$out/bench.log" 2>&1
  grep -A4 "decode step" "$out/bench.log"
fi
if [ "${ANCHOR:-1}" != 0 ]; then
  PYTHONUNBUFFERED=1 python3 bench/sdpa_anchor.py --json "$out/sdpa.json" > "$out/sdpa.log" 2>&1
  python3 bench/compare.py "$out/bench.json" "$out/sdpa.json" | tee "$out/compare.md"
fi

if [ "${SERVER:-0}" != 0 ]; then
  port=50051
  # The server finds libllm_cuda_backend.so and libllm_sentencepiece.so in /tmp/g/lib (../lib).
  /tmp/g/bin/llm-server --backend=cuda --model=models/default --port=$port \
    > "$out/server.log" 2>&1 &
  server=$!
  ready=0
  for _ in $(seq 240); do
    if /tmp/g/bin/llm-client --target=localhost:$port --timeout=1s health > /dev/null 2>&1; then
      ready=1
      break
    fi
    kill -0 $server 2> /dev/null || break
    sleep 0.25
  done
  echo "server ready: $ready"
  {
    echo '$ llm-client smoke'
    /tmp/g/bin/llm-client --target=localhost:$port smoke
    echo "exit $?"
    echo '$ llm-client generate "The meaning of life is" --max_tokens=40'
    /tmp/g/bin/llm-client --target=localhost:$port generate "The meaning of life is" --max_tokens=40
    echo "exit $?"
  } > "$out/client.log" 2>&1
  cat "$out/client.log"
  /tmp/g/bin/llm-bench --target=localhost:$port --concurrency=64 --requests=0 \
    --duration="${BENCH_SECONDS:-15}s" --json_out="$out/llm_bench.json" > "$out/llm_bench.log" 2>&1
  echo "llm-bench exit $?"
  tail -25 "$out/llm_bench.log"
  kill -TERM $server
  wait $server
  echo "server exit $?"
  head -40 "$out/server.log"
fi
