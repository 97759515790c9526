#!/usr/bin/env bash
# One device call of the fourth session (2026-11-24), from the repository root on the GPU machine,
# with .gpu/bundle.tar.gz from `scripts/gpu-bundle.sh build-graphs` (carry [".gpu"]):
#   PHASES=tests,bench RUNS="name:sections:VAR=value+VAR=value ..." bash docs/perf/2026-11-24-h100-session4/device_run.sh $OUT
# Logs go to /tmp/s4 and are packed into $OUT/s4.tar.gz after every phase ($DEVICE_RUN_NAME instead
# of s4 where set: the fifth session's wrapper sets s5) (the device tool returns
# at most 8 files); each bench run's decode-step rows are also echoed.
set -uo pipefail
out_dir="${1:?usage: device_run.sh OUT}"
phases="${PHASES:-tests,bench}"
run_name=${DEVICE_RUN_NAME:-s4}
logs=/tmp/$run_name
mkdir -p "$logs" /tmp/g
pack() { tar -czf "$out_dir/$run_name.tar.gz" -C /tmp "$run_name"; }
wants() { [[ ",$phases," == *",$1,"* ]]; }
tar -xzf .gpu/bundle.tar.gz -C /tmp/g || exit 1
export LD_LIBRARY_PATH=/tmp/g/lib
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$logs/device.txt"

if wants tests; then
  for t in kernels_gpu_tests model_gpu_tests; do
    /tmp/g/bin/$t > "$logs/$t.log" 2>&1
    echo "$t: $(grep -E '^\[  (PASSED|FAILED)  \]|tests? from .* ran' "$logs/$t.log" | tr '\n' ' ')"
    grep -E '^\[  FAILED  \]' "$logs/$t.log" | head -10
  done
  pack
fi

if wants sanitize; then
  for tool in memcheck racecheck synccheck; do
    /usr/local/cuda/bin/compute-sanitizer --tool $tool --error-exitcode 1 /tmp/g/bin/kernels_gpu_tests \
      --gtest_filter="${SANITIZE_FILTER:-*Decode*:*Gemv*:*Fused*:*RmsNorm*:*Rope*:*Silu*}" \
      > "$logs/sanitize_$tool.log" 2>&1
    echo "sanitize $tool rc=$? $(grep -E 'ERROR SUMMARY' "$logs/sanitize_$tool.log" | tail -1)"
  done
  pack
fi

if wants bench; then
  for spec in ${RUNS:-}; do
    IFS=':' read -r name sections envs <<< "$spec"
    # shellcheck disable=SC2086
    env LLM_BENCH_DECODE_MODES=${MODES:-graphs} ${envs//+/ } /tmp/g/bin/llm-bench-kernels \
      --sections "$sections" --json "$logs/$name.json" > "$logs/$name.log" 2>&1
    echo "== $name: $(grep -E '^B(1|32|64) context 512 graphs|^one prompt' "$logs/$name.log" | awk '{print $1, $5}' | tr '\n' ' ')"
  done
  pack
fi

if wants ncu; then
  LLM_BENCH_PROFILE_STEP=1 LLM_BENCH_DECODE_BATCHES=${NCU_BATCH:-1} LLM_BENCH_DECODE_MODES=graphs \
    /usr/local/cuda/bin/ncu --profile-from-start off --clock-control none --cache-control none \
    --metrics gpu__time_duration.sum --csv /tmp/g/bin/llm-bench-kernels --sections decode_step \
    > "$logs/ncu_step.csv" 2>&1
  pack
fi
