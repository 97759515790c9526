// Flash prefill instantiation for head_dim 64 (see flash_prefill.cuh).
#include "kernels/cuda/flash_prefill.cuh"

namespace llm::cuda {

// 4 warps x 32 rows = 128 query rows per block, 64-position K/V tiles: 48 KB of shared memory.
using FlashPrefillHeadDim64Traits = FlashPrefillTraits<64, 4, 2, 64>;

absl::Status LaunchFlashPrefillHeadDim64(const PagedAttentionParams& params, cudaStream_t stream) {
  return LaunchFlashPrefillWithTraits<FlashPrefillHeadDim64Traits>(params, stream);
}

}  // namespace llm::cuda
