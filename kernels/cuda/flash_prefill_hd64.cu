// Flash prefill instantiation for head_dim 64 (see flash_prefill.cuh).
#include "kernels/cuda/flash_prefill.cuh"

namespace llm::cuda {

// 8 warps x 16 rows = 128 query rows per block, 64-position K/V tiles, O rescaled every tile,
// block table prefetched, registers capped at 128 for 2 blocks (16 warps) per SM; 48 KB of shared
// memory. Chosen by `llm-bench-kernels --sections variants` on an H100 (docs/PERFORMANCE.md):
// 191 / 223 TFLOP/s at B8 S2048 / B2 S8192 against 176 / 212 for 4 warps x 32 rows.
using FlashPrefillHeadDim64Traits = FlashPrefillTraits<64, 8, 1, 64, false, 2>;

absl::Status LaunchFlashPrefillHeadDim64(const PagedAttentionParams& params, cudaStream_t stream) {
  return LaunchFlashPrefillWithTraits<FlashPrefillHeadDim64Traits>(params, stream);
}

}  // namespace llm::cuda
