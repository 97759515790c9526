#!/usr/bin/env bash
# The README's first quickstart command: sets up a fresh Debian 12 machine, builds llm-server (and the
# CUDA backend plugin when nvcc is present) and starts it on the embedded default model, on the CUDA
# backend when a GPU and the plugin are there, else on the CPU. Extra arguments go to llm-server,
# e.g. ./scripts/serve.sh --port=50052 --metrics_port=9090
set -euo pipefail
cd "$(dirname "$0")/.."

./deploy/install-deps.sh

build_dir=${LLM_BUILD_DIR:-build}
targets=(llm-server llm-client llm-bench llm_sentencepiece)
cuda_args=()
if [[ -x /usr/local/cuda/bin/nvcc ]]; then
  cuda_args+=(-DLLM_ENABLE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=${LLM_CUDA_ARCHITECTURES:-90})
  targets+=(llm_cuda_backend)
fi
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${cuda_args[@]}"
cmake --build "$build_dir" -j "$(nproc)" --target "${targets[@]}"

plugin="$build_dir/kernels/cuda/libllm_cuda_backend.so"
if [[ -f "$plugin" && -z "${LLM_CUDA_PLUGIN:-}" ]]; then
  export LLM_CUDA_PLUGIN="$PWD/$plugin"
fi
exec "$build_dir/server/service/llm-server" --metrics_port="${LLM_METRICS_PORT:-9090}" "$@"
