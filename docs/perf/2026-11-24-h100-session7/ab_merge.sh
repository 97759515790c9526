set -u
OUT=$1
PHASES=${PHASES:-tests,bench} RUNS="trn:variants:LLM_BENCH_VARIANT_SETS=trace new1:decode_step" bash docs/perf/2026-11-24-h100-session7/device_run.sh $OUT
mkdir -p /tmp/gb && tar -xzf .gpu-base/bundle.tar.gz -C /tmp/gb
run() { LD_LIBRARY_PATH=/tmp/$1/lib LLM_BENCH_DECODE_MODES=graphs LLM_BENCH_VARIANT_SETS=trace /tmp/$1/bin/llm-bench-kernels --sections $2 > /tmp/s7/$3.log 2>&1; echo "$3: $(grep -E '^B(1|32|64) context 512 graphs' /tmp/s7/$3.log | awk '{print $1, $5}' | tr '\n' ' ')"; }
run gb variants trb
for r in 1 2 3; do run gb decode_step base$r; run g decode_step new$((r+1)); done
echo "--- trace new"; tail -6 /tmp/s7/trn.log; echo "--- trace base"; tail -6 /tmp/s7/trb.log
tar -czf $OUT/s7.tar.gz -C /tmp s7
