// Flash prefill instantiation for head_dim 128 (see flash_prefill.cuh).
#include "kernels/cuda/flash_prefill.cuh"

namespace llm::cuda {

// 8 warps x 16 rows = 128 query rows per block, 64-position K/V tiles, O rescaled every tile, the
// block table read just before each tile's copy (prefetching it a tile ahead cost 3% here: more
// registers under the cap), registers capped at 128 (a few spill) for 2 blocks (16 warps) per SM;
// 96 KB of shared memory. Chosen by `llm-bench-kernels --sections variants` on an H100
// (docs/PERFORMANCE.md): 197 / 226 TFLOP/s at B8 S2048 / B2 S8192, against 190 / 219 with the
// prefetch, 188 / 229 for 4 warps x 32 rows (which spills) and 176 / 206 with 32-position tiles.
using FlashPrefillHeadDim128Traits = FlashPrefillTraits<128, 8, 1, 64, false, 2>;

absl::Status LaunchFlashPrefillHeadDim128(const PagedAttentionParams& params, cudaStream_t stream) {
  return LaunchFlashPrefillWithTraits<FlashPrefillHeadDim128Traits>(params, stream);
}

}  // namespace llm::cuda
