// The RMS scale of one row, 1 / sqrt(mean(x^2) + eps) in fp32, taken by a whole thread block: the
// kernels that apply a folded norm's scale to a product (RowRmsScale in kernels/backend.h:
// RopeAppendKv's qkv rows, SiluMul's gate and up, the GEMV's kRmsScale, flash decode's folded RoPE)
// compute it from the row itself instead of a norm kernel writing normalised activations. Every
// thread of the block must call it (it synchronises).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace llm::cuda {

// The sums run as over kRmsSumThreads threads whatever the block's size (which must divide it):
// thread t stands for t, t + blockDim.x, ..., so the 256-thread kernels (the GEMV, RopeAppendKv,
// SiluMul) and the 128-thread flash decode get the same scale to the bit.
inline constexpr int kRmsSumThreads = 256;

// The sum of the squares of 8 bf16 values (one 16-byte chunk), in order, from 0.
__device__ __forceinline__ float SumSquares8(const uint4& chunk) {
  const auto* pairs = reinterpret_cast<const __nv_bfloat162*>(&chunk);
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(pairs[i]);
    sum = fmaf(f.x, f.x, sum);
    sum = fmaf(f.y, f.y, sum);
  }
  return sum;
}

__device__ __forceinline__ float BlockInverseRms(const __nv_bfloat16* x, int hidden, float eps) {
  __shared__ float warp_sums[kRmsSumThreads / 32];
  const bool vector = hidden % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  for (int thread = threadIdx.x; thread < kRmsSumThreads; thread += blockDim.x) {
    float sum = 0.f;
    if (vector) {
      // Per chunk a sum of its 8 squares, then into the thread's total: the GEMV's kRmsScale
      // prologue sums in this order too, so both give the same scale to the bit.
      const auto* chunks = reinterpret_cast<const uint4*>(x);
      for (int c = thread; c < hidden / 8; c += kRmsSumThreads) sum += SumSquares8(chunks[c]);
    } else {
      for (int i = thread; i < hidden; i += kRmsSumThreads) {
        const float f = __bfloat162float(x[i]);
        sum = fmaf(f, f, sum);
      }
    }
#pragma unroll
    for (int mask = 16; mask > 0; mask /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, mask);
    if (thread % 32 == 0) warp_sums[thread / 32] = sum;
  }
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kRmsSumThreads / 32; ++w) total += warp_sums[w];
  __syncthreads();  // warp_sums may be reused by a second call
  return rsqrtf(total / hidden + eps);
}

}  // namespace llm::cuda
