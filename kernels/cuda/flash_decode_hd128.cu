// Flash decode instantiation for head_dim 128 (see flash_decode.cuh).
#include "kernels/cuda/flash_decode.cuh"

namespace llm::cuda {

// 4 warps, 16-position K/V tiles per warp, 3 cp.async stages per warp.
using FlashDecodeHeadDim128Traits = FlashDecodeTraits<128, 4, 16, 3>;

absl::Status LaunchFlashDecodeHeadDim128(const PagedAttentionParams& params, cudaStream_t stream) {
  return LaunchFlashDecodeWithTraits<FlashDecodeHeadDim128Traits>(params, stream);
}

}  // namespace llm::cuda
