// wgmma flash prefill instantiation for head_dim 64 (see flash_prefill_wgmma.cuh): 128 query rows
// x 128-position K/V tiles, 4 stages (16 KB Q + 4 x 32 KB K/V = 145 KB of shared memory).
#include "kernels/cuda/flash_prefill_wgmma.cuh"
#include "kernels/cuda/flash_prefill_wgmma.h"

namespace llm::cuda {

using FlashPrefillWgmmaHeadDim64Traits = FlashPrefillWgmmaTraits<64, 4>;

absl::Status LaunchFlashPrefillWgmmaHeadDim64(const PagedAttentionParams& params,
                                              cudaStream_t stream) {
  return LaunchFlashPrefillWgmmaWithTraits<FlashPrefillWgmmaHeadDim64Traits>(params, stream);
}

}  // namespace llm::cuda
