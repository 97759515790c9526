#!/usr/bin/env bash
# Packs binaries built here (Debian 12) for the GPU machine, which has CUDA but no Abseil, gRPC,
# GoogleTest or prometheus-cpp: copies them into .gpu/bin and their shared-library closure (minus the
# C/C++ runtime and the CUDA libraries the GPU machine has) into bin/ and lib/ of a gzipped tarball,
# .gpu/bundle.tar.gz (OpenBLAS alone is 36 MB unpacked; the device call's tree limit is 64 MiB).
# .gpu/ is git-ignored: send it with the device call's `carry: [".gpu"]`, then on the device:
#   mkdir -p /tmp/g && tar -xzf .gpu/bundle.tar.gz -C /tmp/g && export LD_LIBRARY_PATH=/tmp/g/lib
#
# usage: [SERVER=1] [BUNDLE_DIR=.gpu] scripts/gpu-bundle.sh [build-dir] [binary-or-library ...]
#   BUNDLE_DIR (relative to the repository root, git-ignored) lets two sessions keep separate bundles.
#   default build dir: build-cuda; default binaries: kernels_gpu_tests, llm-bench-kernels,
#   model_gpu_tests and the plugin libllm_cuda_backend.so (whatever of them exists); with SERVER=1
#   also llm-server, llm-client, llm-bench, llm-bench-engine and the tokenizer module
#   libllm_sentencepiece.so (with their gRPC/Abseil/prometheus closure) for the end-to-end sections
#   (SERVER, SERVE_1B) of scripts/gpu-run.sh. The executables land in bin/, the libraries in lib/:
#   the server finds both plugins through ../lib.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build-cuda}"
shift || true
files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  for f in tests/kernels/kernels_gpu_tests bench/llm-bench-kernels tests/model/model_gpu_tests \
           kernels/cuda/libllm_cuda_backend.so; do
    [ -e "$build/$f" ] && files+=("$build/$f")
  done
  if [ "${SERVER:-0}" != 0 ]; then
    for f in server/service/llm-server client/llm-client client/llm-bench bench/llm-bench-engine \
             server/text/libllm_sentencepiece.so; do
      [ -e "$build/$f" ] || { echo "missing $build/$f (build it first)" >&2; exit 1; }
      files+=("$build/$f")
    done
  fi
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
mkdir -p "$out/bin" "$out/lib"
# Present on the GPU machine (system or CUDA toolkit): never bundled.
skip='^(linux-vdso|ld-linux|libc\.|libm\.|libstdc\+\+|libgcc_s|libpthread|libdl|librt|libcuda\.|libcudart|libcublas)'
for f in "${files[@]}"; do
  case "$f" in
    *.so|*.so.*) cp -L "$f" "$out/lib/" ;;
    *) cp -L "$f" "$out/bin/" ;;
  esac
  ldd "$f" | awk '/=>/ {print $1, $3}' | while read -r name path; do
    if [[ ! "$name" =~ $skip ]] && [ -f "$path" ] && [ ! -e "$out/lib/$name" ]; then
      cp -L "$path" "$out/lib/$name"
    fi
  done
done
strip --strip-unneeded "$out"/bin/* "$out"/lib/*.so* 2>/dev/null || true
bundle_dir="$root/${BUNDLE_DIR:-.gpu}"
rm -rf "$bundle_dir"
mkdir -p "$bundle_dir"
tar -C "$out" -czf "$bundle_dir/bundle.tar.gz" bin lib
ls "$out/bin"
du -sh "$out" "$bundle_dir/bundle.tar.gz"
