#!/usr/bin/env bash
# End-to-end metrics check with a real Prometheus: starts llm-server on loopback, lints a live
# /metrics scrape with promtool, starts Debian's prometheus with a generated config scraping it every
# second, drives traffic with llm-client, and queries Prometheus's HTTP API until the token counters
# and the TTFT histogram have moved. ctest label "prometheus"; not in the default run. Bounded to
# about 90 s. Exit 77 = skipped (prometheus, promtool or the binaries missing).
#
#   tests/deploy/prometheus_scrape_test.sh LLM_SERVER LLM_CLIENT
set -euo pipefail

server_bin=${1:?usage: prometheus_scrape_test.sh LLM_SERVER LLM_CLIENT}
client_bin=${2:?usage: prometheus_scrape_test.sh LLM_SERVER LLM_CLIENT}
skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; [[ -f "$work/server.log" ]] && tail -20 "$work/server.log"; exit 1; }
for tool in prometheus promtool python3; do
  command -v "$tool" >/dev/null || skip "$tool not installed (apt-get install prometheus)"
done
[[ -x "$server_bin" && -x "$client_bin" ]] || skip "llm-server or llm-client not built"

work=$(mktemp -d "${TMPDIR:-/tmp}/llm-prometheus-test.XXXXXX")
server_pid=""
prometheus_pid=""
cleanup() {
  for pid in $prometheus_pid $server_pid; do kill "$pid" 2>/dev/null || true; done
  for pid in $prometheus_pid $server_pid; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

read -r grpc_port metrics_port prometheus_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')

http_get() { python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"; }
# The value of a PromQL query's first sample, or empty.
query() {
  python3 - "$prometheus_port" "$1" <<'PY'
import json, sys, urllib.parse, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/api/v1/query?" + urllib.parse.urlencode({"query": sys.argv[2]})
try:
    body = json.load(urllib.request.urlopen(url, timeout=5))
except Exception:
    sys.exit(0)
result = body.get("data", {}).get("result", [])
if body.get("status") == "success" and result:
    print(result[0]["value"][1])
PY
}
wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...: retry COMMAND every second
  local deadline=$(( $(date +%s) + $1 )) description=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < deadline )) || fail "timed out waiting for $description"
    sleep 1
  done
}

echo "== llm-server on 127.0.0.1:$grpc_port, metrics on :$metrics_port"
"$server_bin" --host=127.0.0.1 --port="$grpc_port" --metrics_port="$metrics_port" --backend=cpu \
  --threads=2 > "$work/server.log" 2>&1 &
server_pid=$!
wait_until 60 "llm-server health" "$client_bin" --target="127.0.0.1:$grpc_port" --timeout=2s health

echo "== promtool check metrics on a live scrape"
http_get "http://127.0.0.1:$metrics_port/metrics" > "$work/scrape.prom" || fail "/metrics not served"
grep -q '^llm_model_info{' "$work/scrape.prom" || fail "llm_model_info missing from /metrics"
promtool check metrics < "$work/scrape.prom" || fail "promtool check metrics found problems"

echo "== prometheus on 127.0.0.1:$prometheus_port"
cat > "$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: llm-server
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
YAML
promtool check config "$work/prometheus.yml" >/dev/null || fail "generated config rejected"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$prometheus_port" --log.level=warn > "$work/prometheus.log" 2>&1 &
prometheus_pid=$!
up() { [[ "$(query 'up{job="llm-server"}')" == "1" ]]; }
wait_until 30 "Prometheus to scrape llm-server (up == 1)" up
tokens_before=$(query 'sum(llm_generation_tokens_total)')
ttft_before=$(query 'sum(llm_time_to_first_token_seconds_count)')
echo "before traffic: generated tokens $tokens_before, TTFT observations $ttft_before"

echo "== traffic: llm-client generate x5 and smoke"
for i in 1 2 3 4 5; do
  "$client_bin" --target="127.0.0.1:$grpc_port" --tokens="1,$((10 + i)),27" --max_tokens=8 generate \
    > /dev/null || fail "generate $i"
done
"$client_bin" --target="127.0.0.1:$grpc_port" smoke > "$work/smoke.log" || { cat "$work/smoke.log"; fail "smoke"; }

moved() {
  local tokens ttft
  tokens=$(query 'sum(llm_generation_tokens_total)')
  ttft=$(query 'sum(llm_time_to_first_token_seconds_count)')
  python3 -c 'import sys; b_tok, b_ttft, tok, ttft = map(float, sys.argv[1:]); sys.exit(0 if tok >= b_tok + 40 and ttft >= b_ttft + 5 else 1)' \
    "$tokens_before" "$ttft_before" "${tokens:-0}" "${ttft:-0}"
}
wait_until 20 "Prometheus to see >= 40 more generated tokens and >= 5 more TTFT observations" moved
echo "after traffic: generated tokens $(query 'sum(llm_generation_tokens_total)')," \
     "TTFT observations $(query 'sum(llm_time_to_first_token_seconds_count)')"

p50=$(query 'histogram_quantile(0.5, sum by (le) (rate(llm_time_to_first_token_seconds_bucket[1m])))')
[[ -n "$p50" && "$p50" != "NaN" ]] || fail "TTFT p50 from the histogram is '$p50'"
ok=$(query 'sum(llm_requests_total{rpc="Generate",code="OK"})')
python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= 5 else 1)' "${ok:-0}" \
  || fail "llm_requests_total{rpc=Generate,code=OK} is '$ok', want >= 5"
echo "TTFT p50 ${p50}s, Generate OK $ok"
echo "PASS: Prometheus scraped llm-server and saw tokens, requests and TTFT move"
