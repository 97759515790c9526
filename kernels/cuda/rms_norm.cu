// RMSNorm and the fused residual-add + RMSNorm:
//   [residual += x]; out = v / sqrt(mean(v^2) + eps) * weight,  v = the (updated) residual or x
// Statistics in fp32. One thread block per row (16-byte accesses where the row allows); each thread
// keeps its share of the row in registers between the sum of squares and the scaling, so a row is
// read once. The residual is stored in bf16 and the norm is taken of the stored (rounded) value, as
// the next layer will see it. Reference: the CPU backend's RmsNorm / AddRmsNorm; test:
// tests/kernels/gpu/small_ops_test.cc.
#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/small_ops.h"

namespace llm::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kMaxPerThread = 32;  // hidden up to 16384

template <int kBlockThreads>
__device__ float BlockSum(float value) {
  __shared__ float warp_sums[kBlockThreads / 32];
#pragma unroll
  for (int mask = 16; mask > 0; mask /= 2) value += __shfl_xor_sync(0xffffffffu, value, mask);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = value;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kBlockThreads / 32; ++w) total += warp_sums[w];
  return total;
}

__global__ void __launch_bounds__(kThreads) RmsNormKernel(const RmsNormParams p) {
  const int64_t row_offset = static_cast<int64_t>(blockIdx.x) * p.hidden;
  // Every load is issued before the first store (the stores may alias the loads as far as the
  // compiler knows, so interleaving them serialised ~16 memory round trips per row: 10 us for one
  // row of 2048 under Nsight Compute). The arithmetic, and so every result, is unchanged.
  float values[kMaxPerThread];
  float residuals[kMaxPerThread];
  float weights[kMaxPerThread];
#pragma unroll
  for (int i = 0; i < kMaxPerThread; ++i) {
    const int column = threadIdx.x + i * kThreads;
    values[i] = 0.f;
    residuals[i] = 0.f;
    weights[i] = 0.f;
    if (column < p.hidden) {
      values[i] = __bfloat162float(p.x[row_offset + column]);
      if (p.residual != nullptr) residuals[i] = __bfloat162float(p.residual[row_offset + column]);
      weights[i] = __bfloat162float(p.weight[column]);
    }
  }
  float sum_squares = 0.f;
#pragma unroll
  for (int i = 0; i < kMaxPerThread; ++i) {
    const int column = threadIdx.x + i * kThreads;
    if (column < p.hidden) {
      float v = values[i];
      if (p.residual != nullptr) {
        const __nv_bfloat16 updated = __float2bfloat16_rn(residuals[i] + v);
        p.residual[row_offset + column] = updated;
        v = __bfloat162float(updated);
      }
      values[i] = v;
      sum_squares += v * v;
    }
  }
  const float inverse_rms = rsqrtf(BlockSum<kThreads>(sum_squares) / p.hidden + p.eps);
#pragma unroll
  for (int i = 0; i < kMaxPerThread; ++i) {
    const int column = threadIdx.x + i * kThreads;
    if (column < p.hidden) {
      p.out[row_offset + column] = __float2bfloat16_rn(values[i] * inverse_rms * weights[i]);
    }
  }
}

// The same with 16-byte accesses (hidden % 8 == 0, aligned rows): kVectorThreads threads per row,
// up to kMaxChunksPerThread chunks of 8 values each, every load issued before the first store.
// H100, TinyLlama-1.1B shape (docs/PERFORMANCE.md): decode step B32 1.70 -> 1.61 ms, B64 1.82 ->
// 1.74 ms, a 2048-token prefill 11.9 -> 10.5 ms against the scalar kernel below.
constexpr int kVectorThreads = 256;
constexpr int kMaxChunksPerThread = 8;  // hidden up to 16384

__global__ void __launch_bounds__(kVectorThreads) RmsNormVectorKernel(const RmsNormParams p) {
  const int64_t row_offset = static_cast<int64_t>(blockIdx.x) * p.hidden;
  const int chunks = p.hidden / 8;
  const auto* x = reinterpret_cast<const uint4*>(p.x + row_offset);
  auto* residual = reinterpret_cast<uint4*>(p.residual + row_offset);
  const auto* weight = reinterpret_cast<const uint4*>(p.weight);
  uint4 values[kMaxChunksPerThread], residuals[kMaxChunksPerThread], weights[kMaxChunksPerThread];
#pragma unroll
  for (int i = 0; i < kMaxChunksPerThread; ++i) {
    const int c = threadIdx.x + i * kVectorThreads;
    if (c < chunks) {
      values[i] = x[c];
      weights[i] = weight[c];
      if (p.residual != nullptr) residuals[i] = residual[c];
    }
  }
  float sum_squares = 0.f;
#pragma unroll
  for (int i = 0; i < kMaxChunksPerThread; ++i) {
    const int c = threadIdx.x + i * kVectorThreads;
    if (c >= chunks) continue;
    auto* v2 = reinterpret_cast<__nv_bfloat162*>(&values[i]);
    const auto* r2 = reinterpret_cast<const __nv_bfloat162*>(&residuals[i]);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (p.residual != nullptr) {
        const float2 v = __bfloat1622float2(v2[j]);
        const float2 r = __bfloat1622float2(r2[j]);
        v2[j] = __floats2bfloat162_rn(r.x + v.x, r.y + v.y);  // the stored, rounded residual
      }
      const float2 v = __bfloat1622float2(v2[j]);
      sum_squares += v.x * v.x + v.y * v.y;
    }
  }
  const float inverse_rms = rsqrtf(BlockSum<kVectorThreads>(sum_squares) / p.hidden + p.eps);
  auto* out = reinterpret_cast<uint4*>(p.out + row_offset);
#pragma unroll
  for (int i = 0; i < kMaxChunksPerThread; ++i) {
    const int c = threadIdx.x + i * kVectorThreads;
    if (c >= chunks) continue;
    if (p.residual != nullptr) residual[c] = values[i];
    const auto* v2 = reinterpret_cast<const __nv_bfloat162*>(&values[i]);
    const auto* w2 = reinterpret_cast<const __nv_bfloat162*>(&weights[i]);
    uint4 result;
    auto* r2 = reinterpret_cast<__nv_bfloat162*>(&result);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 v = __bfloat1622float2(v2[j]);
      const float2 g = __bfloat1622float2(w2[j]);
      r2[j] = __floats2bfloat162_rn(v.x * inverse_rms * g.x, v.y * inverse_rms * g.y);
    }
    out[c] = result;
  }
}

bool VectorApplies(const RmsNormParams& p) {
  const auto aligned = [](const void* pointer) {
    return reinterpret_cast<uintptr_t>(pointer) % 16 == 0;
  };
  return p.hidden % 8 == 0 && p.hidden <= kMaxChunksPerThread * 8 * kVectorThreads &&
         aligned(p.x) && aligned(p.weight) && aligned(p.out) &&
         (p.residual == nullptr || aligned(p.residual));
}

}  // namespace

absl::Status LaunchRmsNorm(const RmsNormParams& p, cudaStream_t stream) {
  if (p.rows == 0) return absl::OkStatus();
  if (p.x == nullptr || p.weight == nullptr || p.out == nullptr || p.rows < 0 || p.hidden <= 0) {
    return absl::InvalidArgumentError("RmsNorm: null array or empty shape");
  }
  if (p.hidden > kThreads * kMaxPerThread) {
    return absl::InvalidArgumentError("RmsNorm: hidden size above 16384 is not supported");
  }
  if (VectorApplies(p)) {
    RmsNormVectorKernel<<<p.rows, kVectorThreads, 0, stream>>>(p);
    LLM_CUDA_CHECK_LAUNCH(RmsNormVectorKernel);
    return absl::OkStatus();
  }
  RmsNormKernel<<<p.rows, kThreads, 0, stream>>>(p);
  LLM_CUDA_CHECK_LAUNCH(RmsNormKernel);
  return absl::OkStatus();
}

}  // namespace llm::cuda
