#!/usr/bin/env bash
# Builds the CPU-only image from deploy/Dockerfile without a Docker engine (podman/buildah with
# chroot isolation), runs llm-server inside it on loopback, and checks it from the image's own
# llm-client (smoke) and from the host (/metrics). Slow: the image build compiles the project.
# ctest label "container"; not in the default test run. Exit 77 = skipped (missing tools).
#
#   tests/deploy/container_test.sh                 # from anywhere; builds the repository it is in
#   LLM_CONTAINER_JOBS=4 ...                       # compile jobs inside the build (default 2)
#   LLM_CONTAINER_BASE=localhost/debian:bookworm   # base image to use/make (default as shown)
#   LLM_CONTAINER_KEEP=1                           # keep the image afterwards (default: kept)
set -euo pipefail
cd "$(dirname "$0")/../.."

skip() { echo "SKIP: $*"; exit 77; }
for tool in podman buildah; do
  command -v "$tool" >/dev/null || skip "$tool not installed (apt-get install podman buildah debootstrap)"
done
[[ $(id -u) -eq 0 ]] || skip "needs root for chroot isolation"

base=${LLM_CONTAINER_BASE:-localhost/debian:bookworm}
image=localhost/llm-server:cpu-test
jobs=${LLM_CONTAINER_JOBS:-2}
work=$(mktemp -d /var/tmp/llm-container-test.XXXXXX)
container=""
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; fi
  if [[ -n "$container" ]]; then buildah rm "$container" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# 1. A Debian 12 base image made locally: no registry is needed.
if ! podman image exists "$base"; then
  command -v debootstrap >/dev/null || skip "no $base image and debootstrap is not installed"
  echo "== making $base with debootstrap (minbase bookworm)"
  debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian \
    > "$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; skip "debootstrap failed (no network?)"; }
  # Slim it the way Debian's -slim images are: no package lists, docs, man pages or locales, and
  # dpkg told to skip them in later installs too.
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/cache/apt/*.bin \
         "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/usr/share/doc/* \
         "$work"/rootfs/usr/share/man/* "$work"/rootfs/usr/share/locale/*
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/locale/*' \
    > "$work/rootfs/etc/dpkg/dpkg.cfg.d/docker-slim"
  tar -C "$work/rootfs" -c . | podman import - "$base" >/dev/null
  rm -rf "$work/rootfs"
fi

# 2. The image, exactly as deploy/Dockerfile says, with the CPU build arguments.
echo "== podman build (CPU image, $jobs jobs); this compiles the project"
start=$(date +%s)
podman build --isolation chroot --network host --format docker -f deploy/Dockerfile \
  --build-arg BUILD_BASE="$base" --build-arg RUNTIME_BASE="$base" \
  --build-arg LLM_ENABLE_CUDA=OFF --build-arg BUILD_JOBS="$jobs" -t "$image" . \
  > "$work/build.log" 2>&1 || { tail -60 "$work/build.log"; echo "FAIL: podman build"; exit 1; }
echo "built in $(( $(date +%s) - start )) s"
size=$(podman image inspect --format '{{.Size}}' "$image")
echo "image size: $size bytes ($(( size / 1024 / 1024 )) MiB)"

# 3. The image's configuration: non-root, ports, health check, entrypoint.
user=$(podman image inspect --format '{{.Config.User}}' "$image")
[[ "$user" == "10001:10001" ]] || { echo "FAIL: image user is '$user', want 10001:10001"; exit 1; }
ports=$(podman image inspect --format '{{json .Config.ExposedPorts}}' "$image")
[[ "$ports" == *50051* && "$ports" == *9090* ]] || { echo "FAIL: exposed ports $ports"; exit 1; }
health=$(podman image inspect --format '{{json .Config.Healthcheck}}' "$image")
[[ "$health" == *llm-client*health* ]] || { echo "FAIL: health check $health"; exit 1; }

# 4. Serve from inside the image on loopback and talk to it.
read -r grpc_port metrics_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
container=$(buildah from "$image")
in_image() { buildah run --isolation chroot --network host "$container" -- "$@"; }
in_image id -u | grep -qx 10001 || { echo "FAIL: processes in the image do not run as uid 10001"; exit 1; }
# Chroot isolation shares the host's PID namespace: the pid the shell writes is the host pid.
# timeout --foreground forwards our one SIGTERM to llm-server; without it, timeout signals its whole
# process group as well, and llm-server gets SIGTERM twice.
in_image sh -c "echo \$\$ > /tmp/llm-server.pid; exec timeout --foreground 600 llm-server --host=127.0.0.1 \
  --port=$grpc_port --metrics_port=$metrics_port --backend=cpu --threads=2" > "$work/server.log" 2>&1 &
run_pid=$!
healthy=""
for _ in $(seq 90); do
  kill -0 "$run_pid" 2>/dev/null || { cat "$work/server.log"; echo "FAIL: llm-server exited"; exit 1; }
  if in_image llm-client --target="127.0.0.1:$grpc_port" --timeout=2s health >/dev/null 2>&1; then
    healthy=1
    break
  fi
  sleep 1
done
[[ -n "$healthy" ]] || { cat "$work/server.log"; echo "FAIL: llm-server not healthy in time"; exit 1; }
server_pid=$(in_image cat /tmp/llm-server.pid)
echo "== llm-client smoke (the image's client against the image's server)"
in_image llm-client --target="127.0.0.1:$grpc_port" smoke || { cat "$work/server.log"; echo "FAIL: smoke"; exit 1; }

echo "== /metrics from the host"
scrape=$(python3 -c "import urllib.request,sys; print(urllib.request.urlopen('http://127.0.0.1:$metrics_port/metrics', timeout=5).read().decode())") \
  || { cat "$work/server.log"; echo "FAIL: /metrics not served"; exit 1; }
grep -q '^llm_model_info{' <<<"$scrape" || { echo "FAIL: llm_model_info missing"; exit 1; }
generated=$(awk '$1 == "llm_generation_tokens_total" { print $2 }' <<<"$scrape")
[[ -n "$generated" && "$generated" != "0" ]] || { echo "FAIL: llm_generation_tokens_total=$generated after smoke"; exit 1; }
echo "llm_generation_tokens_total $generated"

# 5. SIGTERM drains and stops.
kill -TERM "$server_pid"
for _ in $(seq 30); do kill -0 "$server_pid" 2>/dev/null || break; sleep 1; done
server_pid=""
grep -q "stopped" "$work/server.log" || { cat "$work/server.log"; echo "FAIL: no clean stop"; exit 1; }
echo "PASS: image $image ($(( size / 1024 / 1024 )) MiB) builds, serves, passes smoke and stops cleanly"
