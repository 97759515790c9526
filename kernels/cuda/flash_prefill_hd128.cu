// Flash prefill instantiation for head_dim 128 (see flash_prefill.cuh).
#include "kernels/cuda/flash_prefill.cuh"

namespace llm::cuda {

// 4 warps x 32 rows (two m16 tiles per warp: half the shared-memory reads of K/V per MMA of 8 warps
// x 16 rows) = 128 query rows per block, 64-position K/V tiles, lazy O rescale (skipped when no
// row's max moved); 255 registers with ~150 bytes of spills, 2 blocks per SM; 96 KB of shared
// memory. Chosen by `llm-bench-kernels --sections variants` on an H100
// (docs/perf/2026-11-24-h100/variants-run17.log): 241 / 262 / 289 TFLOP/s at B8 S2048 / B1 S4096 /
// B2 S8192, against 233 / 262 / 283 without the lazy rescale, 234 / 245 / 269 for 8 warps x 16 rows
// (128-register cap) and 216 / 235 / 267 with 32-position tiles.
using FlashPrefillHeadDim128Traits = FlashPrefillTraits<128, 4, 2, 64, true, 1>;

absl::Status LaunchFlashPrefillHeadDim128(const PagedAttentionParams& params, cudaStream_t stream) {
  return LaunchFlashPrefillWithTraits<FlashPrefillHeadDim128Traits>(params, stream);
}

}  // namespace llm::cuda
