// Matmul for a few rows (decode at batch <= kGemvMaxRows): out[m, n] = sum_k x'[m, k] * w[n, k],
// with the ops around the decode step's products folded in. x' is x itself or its RMSNorm (before
// qkv, gate_up and the LM head), or x with the product scaled by x's inverse RMS afterwards (a
// norm whose gain is folded into w: kRmsScale). The epilogue
//   kStore / kAdd: stores the product, or adds it into out (the residual after o_proj and down);
//   kSiluPairs:    pairs output column j with row n + j of w and stores SwiGLU's silu(gate) * up;
//   kRopePairs:    pairs column i of each head with column i + D/2 (the qkv product), applies RoPE
//                  to the q and k heads at each token's position, stores the row and appends k and
//                  v to the paged KV cache (RopeAppendKv's work).
// A decode layer is then six launches instead of ten: qkv+RoPE+append, attention (+ merge), o,
// gate_up+SwiGLU, down.
//
// Work split. Weights are the bytes: each warp streams whole rows of w (one output column, or one
// pair, at a time: 16-byte evict-first loads, kLoadsPerLane in flight per lane, the next batch
// issued before the current one is used) and dots them with the M rows of x', which every block
// first builds in shared memory (a copy, or the norm with its block-wide sum of squares). One
// block per kWarps columns; the first weight loads are issued before the prologue.
//
// Tuned on the H100 (docs/PERFORMANCE.md): 8 warps x 4 loads in flight per lane (over its rows)
// beat 4x8, 8x8 and 4x4, and programmatic dependent launch (the blocks issuing their weight loads
// while the previous kernel finishes, then griddepcontrol.wait) made the decode step slower; so
// did an L2 prefetch of each warp's rows before that wait, and streaming the weights with
// cp.async.bulk through a shared-memory ring (bit-identical, 10% slower per product; branch
// gemv-bulk-copies).
//
// Numerics match the unfused ops: the normed activations are rounded to bf16 as RmsNorm stores
// them; products are rounded to bf16 before SwiGLU (as SiluMul reads gate_up) and before RoPE (as
// RopeAppendKv reads qkv), whose formulas (and row scales) are repeated, and before the residual
// add (as Add sees them, and as cuBLASLt's beta = 1 rounds: MatmulAdd).
// Reference: the CPU backend's RmsNorm / Matmul / Add / SiluMul / RopeAppendKv; test:
// tests/kernels/gpu/small_ops_test.cc (Matmul and FusedMatmul cases).
#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/rope_pair.cuh"
#include "kernels/cuda/row_rms.cuh"

namespace llm::cuda {
namespace {

constexpr int kMaxSharedBytes = 96 * 1024;
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kLoadsPerLane = 4;  // 16-byte loads in flight per lane (over all weight rows)

enum class Epilogue { kStoreOrAdd, kSiluPairs, kRopePairs };

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

// The 8 values of `x` times `scale` times the 8 of `weight`, each rounded to bf16 (RmsNorm's
// store).
__device__ __forceinline__ uint4 Normalise8(const uint4& x, const uint4& weight, float scale) {
  uint4 result;
  const auto* x2 = reinterpret_cast<const __nv_bfloat162*>(&x);
  const auto* w2 = reinterpret_cast<const __nv_bfloat162*>(&weight);
  auto* r2 = reinterpret_cast<__nv_bfloat162*>(&result);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 fx = __bfloat1622float2(x2[i]);
    const float2 fw = __bfloat1622float2(w2[i]);
    r2[i] = __floats2bfloat162_rn(fx.x * scale * fw.x, fx.y * scale * fw.y);
  }
  return result;
}

__device__ __forceinline__ float RoundToBf16(float value) {
  return __bfloat162float(__float2bfloat16_rn(value));
}

// Builds x' [M][chunks] (16-byte chunks) in shared memory from p.x; for kRmsScale also each row's
// scale (row_scale[m]; BlockInverseRms's sum order).
template <int M, GemvPrologue kPrologue>
__device__ void BuildActivations(const FusedGemvParams& p, uint4* x_shared, float* row_scale) {
  const int chunks = p.k / 8;
  const auto* x = reinterpret_cast<const uint4*>(p.x);
  if constexpr (kPrologue == GemvPrologue::kNone) {
    for (int i = threadIdx.x; i < M * chunks; i += kThreads) x_shared[i] = x[i];
  } else if constexpr (kPrologue == GemvPrologue::kRmsScale) {
    for (int i = threadIdx.x; i < M * chunks; i += kThreads) x_shared[i] = x[i];
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float scale = BlockInverseRms(p.x + static_cast<int64_t>(m) * p.k, p.k, p.eps);
      if (threadIdx.x == 0) row_scale[m] = scale;
    }
  } else {  // kRmsNorm
    __shared__ float partial[kWarps][M];
    float sums[M];
#pragma unroll
    for (int m = 0; m < M; ++m) {
      sums[m] = 0.f;
      for (int c = threadIdx.x; c < chunks; c += kThreads)
        sums[m] += SumSquares8(x[m * chunks + c]);
#pragma unroll
      for (int mask = 16; mask > 0; mask /= 2)
        sums[m] += __shfl_xor_sync(0xffffffffu, sums[m], mask);
    }
    if (threadIdx.x % 32 == 0) {
#pragma unroll
      for (int m = 0; m < M; ++m) partial[threadIdx.x / 32][m] = sums[m];
    }
    __syncthreads();
    const auto* weight = reinterpret_cast<const uint4*>(p.norm_weight);
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float total = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) total += partial[w][m];
      const float inverse_rms = rsqrtf(total / p.k + p.eps);
      for (int c = threadIdx.x; c < chunks; c += kThreads) {
        x_shared[m * chunks + c] = Normalise8(x[m * chunks + c], weight[c], inverse_rms);
      }
    }
  }
}

// RoPE + KV append of one (head, i) pair of token m's qkv row: (a, b) = columns (i, i + D/2) of
// `head`, the products rounded to bf16 and multiplied by the row's scale (1 without kRmsScale):
// RopeAppendKv's arithmetic from there on.
__device__ void RopePairEpilogue(const FusedGemvParams& p, int m, int pair, float a, float b,
                                 float scale) {
  const RopeAppendParams& r = p.rope;
  const int half_dim = r.head_dim / 2;
  const int head = pair / half_dim;
  const int i = pair - head * half_dim;
  const int rotated_heads = r.num_q_heads + r.num_kv_heads;
  const float x0 = RoundToBf16(a) * scale;
  const float x1 = RoundToBf16(b) * scale;
  __nv_bfloat16 y0 = __float2bfloat16_rn(x0);
  __nv_bfloat16 y1 = __float2bfloat16_rn(x1);
  if (head < rotated_heads) {
    RotatePair(x0, x1, r.positions[m], r.inv_freq[i], r.attention_scaling, y0, y1);
  }
  auto* row = static_cast<__nv_bfloat16*>(p.out) + static_cast<int64_t>(m) * p.n;
  row[head * r.head_dim + i] = y0;
  row[head * r.head_dim + i + half_dim] = y1;
  const int slot = r.slot_mapping[m];
  if (head < r.num_q_heads || slot < 0) return;
  const bool is_key = head < rotated_heads;
  const int kv_head = head - (is_key ? r.num_q_heads : rotated_heads);
  const int block = slot / r.layout.block_size;
  const int64_t offset =
      r.layout.offset_in_layer(block, kv_head, slot - block * r.layout.block_size, i);
  __nv_bfloat16* cache = is_key ? r.k_cache : r.v_cache;
  cache[offset] = y0;
  cache[offset + half_dim] = y1;
}

// One block per kWarps work items: output columns (kStoreOrAdd, kSiluPairs) or (head, i) pairs
// (kRopePairs), each item reading kRows rows of w.
template <int M, GemvPrologue kPrologue, Epilogue kEpilogue>
__global__ void __launch_bounds__(kThreads) FusedGemvKernel(const FusedGemvParams p) {
  constexpr int kRows = kEpilogue == Epilogue::kStoreOrAdd ? 1 : 2;
  constexpr int kUnroll = kLoadsPerLane / kRows;
  extern __shared__ uint4 x_shared[];  // [M][chunks]
  const int chunks = p.k / 8;
  const int lane = threadIdx.x % 32;
  const int items = kEpilogue == Epilogue::kRopePairs ? p.n / 2 : p.n;
  const int item = blockIdx.x * kWarps + threadIdx.x / 32;
  const bool active = item < items;

  // The weight rows of this warp's item.
  const uint4* rows[kRows];
  {
    int64_t first = item, second = item;
    if constexpr (kEpilogue == Epilogue::kSiluPairs) {
      second = static_cast<int64_t>(item) + p.n;
    } else if constexpr (kEpilogue == Epilogue::kRopePairs) {
      const int half_dim = p.rope.head_dim / 2;
      first = (item / half_dim) * p.rope.head_dim + item % half_dim;
      second = first + half_dim;
    }
    const int64_t row_index[2] = {first, second};
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      rows[r] = reinterpret_cast<const uint4*>(p.w) + (active ? row_index[r] : 0) * chunks;
    }
  }
  auto load = [&](int base, uint4(&into)[kRows][kUnroll]) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int c = base + u * 32;
        into[r][u] = active && c < chunks ? __ldcs(rows[r] + c) : make_uint4(0, 0, 0, 0);
      }
    }
  };
  uint4 weights[kRows][kUnroll];
  load(lane, weights);  // in flight during the prologue

  __shared__ float row_scale[M];
  BuildActivations<M, kPrologue>(p, x_shared, row_scale);
  __syncthreads();
  if (!active) return;

  float acc[kRows][M];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.f;
  }
  for (int base = lane; base < chunks; base += 32 * kUnroll) {
    uint4 next[kRows][kUnroll];
    load(base + 32 * kUnroll, next);  // issued before this batch is used
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = base + u * 32;
      if (c < chunks) {
#pragma unroll
        for (int m = 0; m < M; ++m) {
          const uint4 xs = x_shared[m * chunks + c];
#pragma unroll
          for (int r = 0; r < kRows; ++r) acc[r][m] += Dot8(weights[r][u], xs);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) weights[r][u] = next[r][u];
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
#pragma unroll
      for (int mask = 16; mask > 0; mask /= 2)
        acc[r][m] += __shfl_xor_sync(0xffffffffu, acc[r][m], mask);
    }
  }
  if (lane != 0) return;
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const float scale = kPrologue == GemvPrologue::kRmsScale ? row_scale[m] : 1.f;
    if constexpr (kEpilogue == Epilogue::kRopePairs) {
      RopePairEpilogue(p, m, item, acc[0][m], acc[kRows - 1][m], scale);
    } else if constexpr (kEpilogue == Epilogue::kSiluPairs) {
      const float gate = RoundToBf16(acc[0][m]) * scale;
      const float up = RoundToBf16(acc[kRows - 1][m]) * scale;
      static_cast<__nv_bfloat16*>(p.out)[static_cast<int64_t>(m) * p.n + item] =
          __float2bfloat16_rn(gate / (1.f + expf(-gate)) * up);
    } else {
      const int64_t index = static_cast<int64_t>(m) * p.n + item;
      if (p.out_f32) {
        static_cast<float*>(p.out)[index] =
            kPrologue == GemvPrologue::kRmsScale ? RoundToBf16(acc[0][m]) * scale : acc[0][m];
      } else {
        auto* out = static_cast<__nv_bfloat16*>(p.out);
        const float product =
            kPrologue == GemvPrologue::kRmsScale ? RoundToBf16(acc[0][m]) * scale : acc[0][m];
        // The add rounds the product first, as Add after Matmul and cuBLASLt's beta = 1 do.
        out[index] = p.add_to_out
                         ? __float2bfloat16_rn(__bfloat162float(out[index]) + RoundToBf16(product))
                         : __float2bfloat16_rn(product);
      }
    }
  }
}

template <int M, GemvPrologue kPrologue, Epilogue kEpilogue>
absl::Status Launch(const FusedGemvParams& p, cudaStream_t stream) {
  const auto kernel = FusedGemvKernel<M, kPrologue, kEpilogue>;
  static const cudaError_t raised =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxSharedBytes);
  LLM_CUDA_CHECK(raised);
  const int64_t items = kEpilogue == Epilogue::kRopePairs ? p.n / 2 : p.n;
  const unsigned blocks = static_cast<unsigned>((items + kWarps - 1) / kWarps);
  const size_t shared_bytes = static_cast<size_t>(M) * p.k * 2;
  kernel<<<blocks, kThreads, shared_bytes, stream>>>(p);
  LLM_CUDA_CHECK_LAUNCH(FusedGemvKernel);
  return absl::OkStatus();
}

template <GemvPrologue kPrologue, Epilogue kEpilogue>
absl::Status LaunchForRows(const FusedGemvParams& p, cudaStream_t stream) {
  switch (p.m) {
    case 1:
      return Launch<1, kPrologue, kEpilogue>(p, stream);
    case 2:
      return Launch<2, kPrologue, kEpilogue>(p, stream);
    case 3:
      return Launch<3, kPrologue, kEpilogue>(p, stream);
    default:
      return Launch<4, kPrologue, kEpilogue>(p, stream);
  }
}

template <Epilogue kEpilogue>
absl::Status LaunchWithPrologue(const FusedGemvParams& p, cudaStream_t stream) {
  switch (p.prologue) {
    case GemvPrologue::kRmsNorm:
      return LaunchForRows<GemvPrologue::kRmsNorm, kEpilogue>(p, stream);
    case GemvPrologue::kRmsScale:
      return LaunchForRows<GemvPrologue::kRmsScale, kEpilogue>(p, stream);
    default:
      return LaunchForRows<GemvPrologue::kNone, kEpilogue>(p, stream);
  }
}

}  // namespace

bool GemvSupports(const void* x, const void* w, int32_t m, int32_t k) {
  return m >= 1 && m <= kGemvMaxRows && k > 0 && k % 8 == 0 &&
         static_cast<int64_t>(m) * k * 2 <= kMaxSharedBytes &&
         reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
}

absl::Status LaunchFusedGemv(const FusedGemvParams& p, cudaStream_t stream) {
  if (!GemvSupports(p.x, p.w, p.m, p.k) || p.n <= 0 || p.out == nullptr ||
      (p.prologue == GemvPrologue::kRmsNorm &&
       (p.norm_weight == nullptr || reinterpret_cast<uintptr_t>(p.norm_weight) % 16 != 0))) {
    return absl::InvalidArgumentError("Gemv: unsupported shape or alignment");
  }
  const int modes = int{p.add_to_out} + int{p.silu_pairs} + int{p.rope_append} + int{p.out_f32};
  if (modes > 1) return absl::InvalidArgumentError("Gemv: at most one epilogue mode");
  if (p.silu_pairs) return LaunchWithPrologue<Epilogue::kSiluPairs>(p, stream);
  if (p.rope_append) {
    const RopeAppendParams& r = p.rope;
    if (r.head_dim <= 0 || r.head_dim % 2 != 0 || r.num_q_heads <= 0 || r.num_kv_heads <= 0 ||
        p.n != (r.num_q_heads + 2 * r.num_kv_heads) * r.head_dim || r.num_tokens != p.m ||
        r.positions == nullptr || r.slot_mapping == nullptr || r.inv_freq == nullptr ||
        r.k_cache == nullptr || r.v_cache == nullptr || r.layout.head_dim != r.head_dim ||
        r.layout.num_kv_heads != r.num_kv_heads || r.layout.block_size <= 0) {
      return absl::InvalidArgumentError("Gemv: RoPE epilogue shape does not match the qkv product");
    }
    return LaunchWithPrologue<Epilogue::kRopePairs>(p, stream);
  }
  return LaunchWithPrologue<Epilogue::kStoreOrAdd>(p, stream);
}

absl::Status LaunchGemv(const void* x, const void* w, int32_t m, int32_t n, int32_t k, void* out,
                        bool out_f32, cudaStream_t stream) {
  FusedGemvParams p;
  p.x = static_cast<const __nv_bfloat16*>(x);
  p.w = static_cast<const __nv_bfloat16*>(w);
  p.m = m;
  p.n = n;
  p.k = k;
  p.out = out;
  p.out_f32 = out_f32;
  return LaunchFusedGemv(p, stream);
}

}  // namespace llm::cuda
