// Flash decode instantiation for head_dim 128 (see flash_decode.cuh).
#include "kernels/cuda/flash_decode.cuh"

namespace llm::cuda {

// 4 warps, 16-position K/V tiles per warp, 2 cp.async stages per warp (3 blocks per SM): against
// 3 stages, 2338 vs 2308 GB/s at B1 C32k (32 splits) and 2370 vs 2337 at B8 C4k (4 splits) in the
// split sweep of docs/perf/2026-11-24-h100-decode-step/ (LLM_BENCH_DECODE_SWEEP=1); B64 C2k
// measured 2714 vs 2837 GB/s, the other decode rows within +-1.5%.
using FlashDecodeHeadDim128Traits = FlashDecodeTraits<128, 4, 16, 2>;

absl::Status LaunchFlashDecodeHeadDim128(const PagedAttentionParams& params, cudaStream_t stream) {
  return LaunchFlashDecodeWithTraits<FlashDecodeHeadDim128Traits>(params, stream);
}

// The trace pointer is this file's copy of flash_decode_phase_trace (one per translation unit).
bool SetFlashDecodePhaseTraceHeadDim128(unsigned long long* buffer) {
  if constexpr (!FlashDecodeHeadDim128Traits::kPhaseTrace) return false;
  return cudaMemcpyToSymbol(flash_decode_phase_trace, &buffer, sizeof(buffer)) == cudaSuccess;
}

}  // namespace llm::cuda
