// Matmul for a few rows (decode at batch <= kGemvMaxRows): out[m, n] = sum_k x[m, k] * w[n, k].
// One warp per output column n: its lanes stream w's row n (contiguous, 16-byte loads, kUnroll in
// flight per lane, evict-first) and dot it with each of the M rows of x (small, L1/L2-resident),
// fp32 accumulation, a shuffle reduction, bf16 or F32 out. cuBLASLt's picks for M = 1 reached
// 1.1-2.6 TB/s on the TinyLlama shapes (docs/PERFORMANCE.md); this only has to stream bytes.
// Reference: the CPU backend's Matmul; test: tests/kernels/gpu/small_ops_test.cc (Matmul cases).
#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/matmul.h"

namespace llm::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kUnroll = 4;

__device__ __forceinline__ float Dot8(const uint4& a, const uint4& b) {
  const auto* a2 = reinterpret_cast<const __nv_bfloat162*>(&a);
  const auto* b2 = reinterpret_cast<const __nv_bfloat162*>(&b);
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 fa = __bfloat1622float2(a2[i]);
    const float2 fb = __bfloat1622float2(b2[i]);
    sum = fmaf(fa.x, fb.x, sum);
    sum = fmaf(fa.y, fb.y, sum);
  }
  return sum;
}

template <int M>
__global__ void __launch_bounds__(kWarps * 32)
    GemvKernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, int n,
               int k, void* __restrict__ out, bool out_f32) {
  const int column = blockIdx.x * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (column >= n) return;
  const int chunks = k / 8;
  const uint4* row = reinterpret_cast<const uint4*>(w + static_cast<int64_t>(column) * k);
  const uint4* xs = reinterpret_cast<const uint4*>(x);
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.f;
  for (int base = lane; base < chunks; base += 32 * kUnroll) {
    uint4 weights[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = base + u * 32;
      weights[u] = c < chunks ? __ldcs(row + c) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = base + u * 32;
      if (c < chunks) {
#pragma unroll
        for (int m = 0; m < M; ++m) acc[m] += Dot8(weights[u], __ldg(xs + m * chunks + c));
      }
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
#pragma unroll
    for (int mask = 16; mask > 0; mask /= 2) acc[m] += __shfl_xor_sync(0xffffffffu, acc[m], mask);
  }
  if (lane == 0) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const int64_t index = static_cast<int64_t>(m) * n + column;
      if (out_f32) {
        static_cast<float*>(out)[index] = acc[m];
      } else {
        static_cast<__nv_bfloat16*>(out)[index] = __float2bfloat16_rn(acc[m]);
      }
    }
  }
}

}  // namespace

bool GemvSupports(const void* x, const void* w, int32_t m, int32_t k) {
  return m >= 1 && m <= kGemvMaxRows && k > 0 && k % 8 == 0 &&
         reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
}

absl::Status LaunchGemv(const void* x, const void* w, int32_t m, int32_t n, int32_t k, void* out,
                        bool out_f32, cudaStream_t stream) {
  if (!GemvSupports(x, w, m, k) || n <= 0 || out == nullptr) {
    return absl::InvalidArgumentError("Gemv: unsupported shape or alignment");
  }
  const auto* xb = static_cast<const __nv_bfloat16*>(x);
  const auto* wb = static_cast<const __nv_bfloat16*>(w);
  const unsigned blocks = static_cast<unsigned>((n + kWarps - 1) / kWarps);
  switch (m) {
    case 1:
      GemvKernel<1><<<blocks, kWarps * 32, 0, stream>>>(xb, wb, n, k, out, out_f32);
      break;
    case 2:
      GemvKernel<2><<<blocks, kWarps * 32, 0, stream>>>(xb, wb, n, k, out, out_f32);
      break;
    case 3:
      GemvKernel<3><<<blocks, kWarps * 32, 0, stream>>>(xb, wb, n, k, out, out_f32);
      break;
    default:
      GemvKernel<4><<<blocks, kWarps * 32, 0, stream>>>(xb, wb, n, k, out, out_f32);
      break;
  }
  LLM_CUDA_CHECK_LAUNCH(GemvKernel);
  return absl::OkStatus();
}

}  // namespace llm::cuda
