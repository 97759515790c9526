// Flash prefill instantiation for head_dim 64 (see flash_prefill.cuh).
#include "kernels/cuda/flash_prefill.cuh"

namespace llm::cuda {

// 4 warps x 32 rows (two m16 tiles per warp, so each K/V fragment read from shared memory feeds two
// MMAs) = 128 query rows per block, 64-position K/V tiles, O rescaled every tile; 254 registers,
// no spills, 2 blocks per SM; 48 KB of shared memory. Chosen by `llm-bench-kernels --sections
// variants` on an H100 (docs/perf/2026-11-24-h100/variants-run17.log): 226 / 246 / 271 TFLOP/s at
// B8 S2048 / B1 S4096 / B2 S8192, against 226 / 239 / 260 for 8 warps x 16 rows and 202 / 219 / 256
// with the lazy rescale.
using FlashPrefillHeadDim64Traits = FlashPrefillTraits<64, 4, 2, 64, false, 1>;

absl::Status LaunchFlashPrefillHeadDim64(const PagedAttentionParams& params, cudaStream_t stream) {
  return LaunchFlashPrefillWithTraits<FlashPrefillHeadDim64Traits>(params, stream);
}

}  // namespace llm::cuda
