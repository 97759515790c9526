// wgmma flash prefill instantiation for head_dim 128 (see flash_prefill_wgmma.cuh): 128 query rows
// x 128-position K/V tiles, 3 stages (32 KB Q + 3 x 64 KB K/V = 225 KB of shared memory).
#include "kernels/cuda/flash_prefill_wgmma.cuh"
#include "kernels/cuda/flash_prefill_wgmma.h"

namespace llm::cuda {

using FlashPrefillWgmmaHeadDim128Traits = FlashPrefillWgmmaTraits<128, 3>;

absl::Status LaunchFlashPrefillWgmmaHeadDim128(const PagedAttentionParams& params,
                                               cudaStream_t stream) {
  return LaunchFlashPrefillWgmmaWithTraits<FlashPrefillWgmmaHeadDim128Traits>(params, stream);
}

}  // namespace llm::cuda
