// Flash prefill instantiation for head_dim 128 (see flash_prefill.cuh).
#include "kernels/cuda/flash_prefill.cuh"

namespace llm::cuda {

// 4 warps x 32 rows = 128 query rows per block, 32-position K/V tiles (64 would spill registers): 64 KB of shared memory.
using FlashPrefillHeadDim128Traits = FlashPrefillTraits<128, 4, 2, 32>;

absl::Status LaunchFlashPrefillHeadDim128(const PagedAttentionParams& params, cudaStream_t stream) {
  return LaunchFlashPrefillWithTraits<FlashPrefillHeadDim128Traits>(params, stream);
}

}  // namespace llm::cuda
