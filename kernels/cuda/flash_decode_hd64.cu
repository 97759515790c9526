// Flash decode instantiation for head_dim 64 (see flash_decode.cuh).
#include "kernels/cuda/flash_decode.cuh"

namespace llm::cuda {

// 4 warps, 16-position K/V tiles per warp, 3 cp.async stages per warp.
using FlashDecodeHeadDim64Traits = FlashDecodeTraits<64, 4, 16, 3>;

absl::Status LaunchFlashDecodeHeadDim64(const PagedAttentionParams& params, cudaStream_t stream) {
  return LaunchFlashDecodeWithTraits<FlashDecodeHeadDim64Traits>(params, stream);
}

// The trace pointer is this file's copy of flash_decode_phase_trace (one per translation unit).
bool SetFlashDecodePhaseTraceHeadDim64(unsigned long long* buffer) {
  if constexpr (!FlashDecodeHeadDim64Traits::kPhaseTrace) return false;
  return cudaMemcpyToSymbol(flash_decode_phase_trace, &buffer, sizeof(buffer)) == cudaSuccess;
}

bool SetFlashDecodePhaseTrace(unsigned long long* buffer) {
  const bool hd64 = SetFlashDecodePhaseTraceHeadDim64(buffer);
  return SetFlashDecodePhaseTraceHeadDim128(buffer) && hd64;
}

}  // namespace llm::cuda
