#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, with the bundle made by scripts/gpu-bundle.sh:
# unpacks it, runs the GPU tests, compute-sanitizer on a small grid, the kernel benchmarks and the
# torch SDPA anchor, and compares them. Logs and JSON go to $OUT (or the first argument).
# Device-tool command used for docs/PERFORMANCE.md:  bash scripts/gpu-run.sh   (carry: [".gpu"])
#   SECTIONS=copy,prefill,decode,argmax,decode_step,variants  (default: all but variants)
#   BUNDLE=.gpu-x/bundle.tar.gz  another bundle (gpu-bundle.sh with BUNDLE_DIR=.gpu-x; carry it).
#   SANITIZE=0  skips compute-sanitizer; TESTS=0 the GPU tests (KERNEL_TESTS=0 only kernels_gpu_tests); BENCH=0 llm-bench-kernels;
#   ANCHOR=0 the torch SDPA anchor and the comparison.
#   SERVER=1  (bundle made with SERVER=1) end to end: llm-server --backend=cuda on models/default in
#   the background, wait for health, llm-client smoke and generate, llm-bench with 64 concurrent
#   streams for ${BENCH_SECONDS:-15} s; logs server.log, client.log, llm_bench.{log,json}.
#   SERVE_1B=1  (bundle made with SERVER=1) served vs offline on a random TinyLlama-1.1B-shaped bf16
#   checkpoint: llm-bench-engine, then llm-server + llm-bench, 64 streams of 128 + 384 tokens for
#   ${BENCH_SECONDS:-15} s each; table in serve_1b/served_vs_offline.{md,json} (section's comment).
set -uo pipefail
out="${1:-${OUT:-gpu-results}}"
mkdir -p "$out" /tmp/g
tar -xzf "${BUNDLE:-.gpu/bundle.tar.gz}" -C /tmp/g || exit 1
export LD_LIBRARY_PATH=/tmp/g/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$out/device.txt"

# wait_for_health PORT PID TRIES: polls llm-client health every 0.25 s; prints 1 once SERVING, 0
# when the server exits or TRIES polls pass.
wait_for_health() {
  for _ in $(seq "$3"); do
    if /tmp/g/bin/llm-client --target=localhost:"$1" --timeout=1s health > /dev/null 2>&1; then
      echo 1
      return
    fi
    kill -0 "$2" 2> /dev/null || break
    sleep 0.25
  done
  echo 0
}

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
    --sections "${SECTIONS:-copy,prefill,decode,argmax,decode_step}" > "$out/bench.log" 2>&1
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
  echo "server ready: $(wait_for_health $port $server 240)"
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

if [ "${SERVE_1B:-0}" != 0 ]; then
  # Performance issue 8: generated tokens/s served over gRPC (llm-bench, 64 streams) against the
  # engine offline in process (llm-bench-engine, the same closed loop without gRPC), same model,
  # batch, lengths and engine flags; gRPC + scheduling overhead per decode step from the server's
  # /metrics step histograms (bench/served_vs_offline.py). Requests: 128 random prompt tokens, 384
  # generated (greedy, EOS ignored), so a sequence's context grows from 128 to 512 (320 on average
  # over its decode steps). 64 x 512 tokens need 2048 KV blocks of 16 (704 MiB in bf16 for this
  # shape): the KV cache gets 1 GiB instead of llm-server's default 256 MiB, which would hold only
  # ~23 such sequences. Overridable, to run the section on the CPU backend with a tiny shape:
  #   SERVE_BACKEND (cuda), SERVE_SHAPE (make_random_checkpoint.py flags; empty = the 1.1B shape),
  #   SERVE_STREAMS (64), SERVE_PROMPT_LEN (128), SERVE_OUTPUT_LEN (384),
  #   SERVE_KV_BYTES (1073741824), SERVE_FLAGS (extra flags of both binaries, e.g. --threads=2),
  #   PYTHON (python3, needs numpy).
  s1="$out/serve_1b"
  mkdir -p "$s1"
  py="${PYTHON:-python3}"
  model=/tmp/tinyllama-1.1b-random
  streams="${SERVE_STREAMS:-64}"
  prompt_len="${SERVE_PROMPT_LEN:-128}"
  output_len="${SERVE_OUTPUT_LEN:-384}"
  engine_flags=(--backend="${SERVE_BACKEND:-cuda}" --model="$model"
                --kv_cache_bytes="${SERVE_KV_BYTES:-1073741824}" ${SERVE_FLAGS:-})
  # shellcheck disable=SC2086
  "$py" tools/make_random_checkpoint.py --out "$model" ${SERVE_SHAPE:-} | tee "$s1/checkpoint.log"
  /tmp/g/bin/llm-bench-engine "${engine_flags[@]}" --concurrency="$streams" \
    --prompt_len="$prompt_len" --output_len="$output_len" --duration="${BENCH_SECONDS:-15}s" \
    --json_out="$s1/offline.json" > "$s1/offline.log" 2>&1
  echo "llm-bench-engine exit $?"
  cat "$s1/offline.log"
  port=50052
  metrics_port=9092
  /tmp/g/bin/llm-server "${engine_flags[@]}" --port=$port --metrics_port=$metrics_port \
    --metrics_host=127.0.0.1 > "$s1/server.log" 2>&1 &
  server=$!
  echo "server ready: $(wait_for_health $port $server 480)"
  metrics_url="http://127.0.0.1:$metrics_port/metrics"
  "$py" bench/served_vs_offline.py scrape "$metrics_url" "$s1/metrics_before.txt"
  /tmp/g/bin/llm-bench --target=localhost:$port --concurrency="$streams" --requests=0 \
    --duration="${BENCH_SECONDS:-15}s" --prompt_len_min="$prompt_len" --prompt_len_max="$prompt_len" \
    --output_len_min="$output_len" --output_len_max="$output_len" \
    --json_out="$s1/served.json" > "$s1/served.log" 2>&1
  echo "llm-bench exit $?"
  cat "$s1/served.log"
  "$py" bench/served_vs_offline.py scrape "$metrics_url" "$s1/metrics_after.txt"
  kill -TERM $server
  wait $server
  echo "server exit $?"
  head -8 "$s1/server.log"
  "$py" bench/served_vs_offline.py compare --offline "$s1/offline.json" --served "$s1/served.json" \
    --metrics_before "$s1/metrics_before.txt" --metrics_after "$s1/metrics_after.txt" \
    --out_dir "$s1"
fi
