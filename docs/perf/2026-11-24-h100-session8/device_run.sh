#!/usr/bin/env bash
# The eighth session's device calls (2026-11-24): the fourth session's script with its logs in
# /tmp/s8 and $OUT/s8.tar.gz. From the repository root on the GPU machine, carry [".gpu"]:
#   PHASES=tests,sanitize,bench RUNS="name:sections:VAR=value+VAR=value ..." \
#     bash docs/perf/2026-11-24-h100-session8/device_run.sh $OUT
exec env DEVICE_RUN_NAME=s8 bash "$(dirname "$0")/../2026-11-24-h100-session4/device_run.sh" "$@"
