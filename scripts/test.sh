#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds everything and runs the test suite.
# This is the README's test command, and CI (.ci/run) calls exactly this.
#
#   ./scripts/test.sh            # install deps, configure, build, run the default test set
#   LLM_TEST_LABELS_EXCLUDE=...  # ctest -LE regex (default: slow|container|prometheus suites run on their own)
set -euo pipefail
cd "$(dirname "$0")/.."

./deploy/install-deps.sh

build_dir=${LLM_BUILD_DIR:-build}
jobs=${LLM_JOBS:-$(nproc)}
cuda_args=()
# CI builds the CUDA plugin for sm_90 only, to keep it fast; the kernels run only on the GPU machine.
if [[ -x /usr/local/cuda/bin/nvcc ]]; then
  cuda_args+=(-DLLM_ENABLE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=${LLM_CUDA_ARCHITECTURES:-90})
fi

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${cuda_args[@]}"
cmake --build "$build_dir" -j "$jobs"

exclude=${LLM_TEST_LABELS_EXCLUDE:-slow|container|prometheus}
ctest --test-dir "$build_dir" -j "$jobs" --output-on-failure --timeout 600 -LE "$exclude"
