#!/usr/bin/env bash
# Installs every build and test dependency from Debian 12 packages. Idempotent.
# The CUDA toolkit is not installed here: when /usr/local/cuda/bin/nvcc exists the CUDA targets build too.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler  # gRPC service
  libabsl-dev                                   # Status/StatusOr, flags, logging
  prometheus-cpp-dev libcivetweb-dev            # /metrics endpoint
  libgtest-dev libgmock-dev                     # tests
  nlohmann-json3-dev                            # config.json, safetensors headers
  libsentencepiece-dev sentencepiece            # tokenizer
  libopenblas-dev                               # CPU backend GEMM
  python3                                       # test helper scripts
  python3-yaml                                  # tests/deploy/validate_deploy.py (manifests, compose)
  python3-numpy                                 # tools/make_random_checkpoint.py (tests/model random checkpoints)
  prometheus                                    # promtool in metrics/deploy tests; the "prometheus" test
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
