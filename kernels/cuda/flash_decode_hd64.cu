// Flash decode instantiation for head_dim 64 (see flash_decode.cuh).
#include "kernels/cuda/flash_decode.cuh"

namespace llm::cuda {

// 4 warps, 16-position K/V tiles per warp, 3 cp.async stages per warp.
using FlashDecodeHeadDim64Traits = FlashDecodeTraits<64, 4, 16, 3>;

absl::Status LaunchFlashDecodeHeadDim64(const PagedAttentionParams& params, cudaStream_t stream) {
  return LaunchFlashDecodeWithTraits<FlashDecodeHeadDim64Traits>(params, stream);
}

}  // namespace llm::cuda
