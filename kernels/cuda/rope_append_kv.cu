// Fused RoPE + KV append. For token t at absolute position p and i < D/2:
//   angle = p * inv_freq[i];  c = cos(angle) * scaling;  s = sin(angle) * scaling
//   (x[i], x[i + D/2]) <- (x[i] c - x[i + D/2] s,  x[i + D/2] c + x[i] s)
// for every q and k head of the token's qkv row (in place), then the rotated k and the v heads go
// to the paged pool: slot = slot_mapping[t], block = slot / block_size, kvcache::KvLayout places
// them. Blocks (token, slice): the threads of a token's slices stride over (head, i) pairs, then
// over v elements (one element per thread for the usual shapes). With scale_rows_by (a folded
// norm's RowRmsScale) each block takes its token's scale (decode-sized launches: after the first
// elements' loads are out) and multiplies q, k and v by it. The angle is rounded to fp32 before
// cos/sin (full-range sincosf), as the CPU reference does. Reference: the CPU backend's
// RopeAppendKv; test: tests/kernels/gpu/small_ops_test.cc. Prefill-sized launches take
// RopeAppendKvRowsKernel (a block per token, 16-byte accesses) where the shapes allow.
#include <algorithm>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/rope_pair.cuh"
#include "kernels/cuda/row_rms.cuh"
#include "kernels/cuda/small_ops.h"

namespace llm::cuda {
namespace {

// Block `token`'s position, qkv row and KV slot (append false: slot_mapping < 0, not written).
struct TokenSlot {
  int position;
  __nv_bfloat16* row;
  bool append;
  int block;
  int slot_in_block;
};

__device__ __forceinline__ TokenSlot TokenSlotOf(const RopeAppendParams& p, int token) {
  const int slot = p.slot_mapping[token];
  const int64_t row_stride = static_cast<int64_t>(p.num_q_heads + 2 * p.num_kv_heads) * p.head_dim;
  const bool append = slot >= 0;
  return TokenSlot{p.positions[token], p.qkv + token * row_stride, append,
                   append ? slot / p.layout.block_size : 0,
                   append ? slot % p.layout.block_size : 0};
}

// Launches of at most this many tokens (decode steps: one wave of blocks on an H100) load each
// thread's first elements before the row's scale is taken, so that the two round trips overlap:
// TinyLlama's shape, in-graph, B8 / B16 2.95 -> 2.68 / 2.99 -> 2.76 us. Larger ones stream
// (bandwidth-bound), and there the early loads measured slower (2048 tokens: 35.0 -> 42.3 us);
// they take RopeAppendKvRowsKernel (10.6 us), or where its shapes do not fit the per-pair kernel
// without the early loads.
constexpr int32_t kFirstLoadsEarlyMaxTokens = 256;

// Blocks (token, slice), one pair (and v element) per thread for the usual shapes. With
// kFirstLoadsEarly the thread's first elements are loaded before the row's scale is taken.
template <bool kFirstLoadsEarly>
__global__ void RopeAppendKvPairsKernel(const RopeAppendParams p) {
  const int token = blockIdx.x;
  const int half_dim = p.head_dim / 2;
  const TokenSlot t = TokenSlotOf(p, token);

  const int rotated_heads = p.num_q_heads + p.num_kv_heads;
  const bool scaled = p.scale_rows_by != nullptr;
  __nv_bfloat16* v = t.row + static_cast<int64_t>(rotated_heads) * p.head_dim;
  // blockIdx.y slices the token's elements: one element per thread for the usual shapes, so no
  // load waits behind an earlier (possibly aliasing) store of the same thread.
  const int first = blockIdx.y * blockDim.x + threadIdx.x;
  const int step = gridDim.y * blockDim.x;
  const int pairs = rotated_heads * half_dim;
  const int v_elements = p.num_kv_heads * p.head_dim;
  float scale = 1.f;
  // Pair `index` (head, i) from its unrotated values, into the row and (k heads) the pool.
  const auto rotate = [&](int index, __nv_bfloat16 x0, __nv_bfloat16 x1, float inv_freq) {
    const int head = index / half_dim;
    const int i = index % half_dim;
    __nv_bfloat16* x = t.row + head * p.head_dim;
    __nv_bfloat16 y0, y1;
    RotatePair(__bfloat162float(x0) * scale, __bfloat162float(x1) * scale, t.position, inv_freq,
               p.attention_scaling, y0, y1);
    x[i] = y0;
    x[i + half_dim] = y1;
    if (t.append && head >= p.num_q_heads) {
      const int kv_head = head - p.num_q_heads;
      const int64_t offset = p.layout.offset_in_layer(t.block, kv_head, t.slot_in_block, i);
      p.k_cache[offset] = y0;
      p.k_cache[offset + half_dim] = y1;
    }
  };
  const auto rotate_loaded = [&](int index) {
    const __nv_bfloat16* x = t.row + index / half_dim * p.head_dim;
    const int i = index % half_dim;
    rotate(index, x[i], x[i + half_dim], p.inv_freq[i]);
  };
  // v element `index`, scaled, into the row and the pool.
  const auto store_v = [&](int index, __nv_bfloat16 value) {
    if (scaled) {
      value = __float2bfloat16_rn(__bfloat162float(value) * scale);
      v[index] = value;
    }
    if (t.append) {
      p.v_cache[p.layout.offset_in_layer(t.block, index / p.head_dim, t.slot_in_block,
                                         index % p.head_dim)] = value;
    }
  };
  const auto scale_of_row = [&] {
    return scaled ? BlockInverseRms(p.scale_rows_by + static_cast<int64_t>(token) * p.scale_hidden,
                                    p.scale_hidden, p.scale_eps)
                  : 1.f;
  };
  const bool writes_v = t.append || scaled;
  int begin = first;
  if constexpr (kFirstLoadsEarly) {  // the thread owns these elements: nothing aliases them
    const __nv_bfloat16 zero = __float2bfloat16_rn(0.f);
    __nv_bfloat16 x0 = zero, x1 = zero, first_v = zero;
    float inv_freq = 0.f;
    if (first < pairs) {
      const __nv_bfloat16* x = t.row + first / half_dim * p.head_dim;
      x0 = x[first % half_dim];
      x1 = x[first % half_dim + half_dim];
      inv_freq = p.inv_freq[first % half_dim];
    }
    if (writes_v && first < v_elements) first_v = v[first];
    scale = scale_of_row();
    if (first < pairs) rotate(first, x0, x1, inv_freq);
    if (writes_v && first < v_elements) store_v(first, first_v);
    begin += step;
  } else {
    scale = scale_of_row();
  }
  for (int index = begin; index < pairs; index += step) rotate_loaded(index);
  if (!writes_v) return;
  for (int index = begin; index < v_elements; index += step) store_v(index, v[index]);
}

// Large launches (prefill chunks) with head_dim % 16 == 0: one block per token. The token's
// cosines and sines are taken once per column into shared memory (RopeCosSin; the per-pair kernels
// above take them again for every head: 36 times at TinyLlama's shape) and the row scale once per
// token; then each thread rotates 8 adjacent pairs of a head with 16-byte loads and stores.
constexpr int kRowsThreads = 128;
constexpr int kRowsMaxHalfDim = 256;

__global__ void __launch_bounds__(kRowsThreads) RopeAppendKvRowsKernel(const RopeAppendParams p) {
  __shared__ float cosines[kRowsMaxHalfDim], sines[kRowsMaxHalfDim];
  const int token = blockIdx.x;
  const int half_dim = p.head_dim / 2;
  const TokenSlot t = TokenSlotOf(p, token);
  for (int i = threadIdx.x; i < half_dim; i += kRowsThreads) {
    RopeCosSin(t.position, p.inv_freq[i], p.attention_scaling, cosines[i], sines[i]);
  }
  const bool scaled = p.scale_rows_by != nullptr;
  const float scale =  // (synchronises the block, so the table is complete after it too)
      scaled ? BlockInverseRms(p.scale_rows_by + static_cast<int64_t>(token) * p.scale_hidden,
                               p.scale_hidden, p.scale_eps)
             : 1.f;
  if (!scaled) __syncthreads();

  const int rotated_heads = p.num_q_heads + p.num_kv_heads;
  const int vectors_per_head = half_dim / 8;
  for (int item = threadIdx.x; item < rotated_heads * vectors_per_head; item += kRowsThreads) {
    const int head = item / vectors_per_head;
    const int i = item % vectors_per_head * 8;
    auto* x0 = reinterpret_cast<uint4*>(t.row + head * p.head_dim + i);
    auto* x1 = reinterpret_cast<uint4*>(t.row + head * p.head_dim + half_dim + i);
    const uint4 in0 = *x0, in1 = *x1;
    const auto* a = reinterpret_cast<const __nv_bfloat16*>(&in0);
    const auto* b = reinterpret_cast<const __nv_bfloat16*>(&in1);
    uint4 out0, out1;
    auto* y0 = reinterpret_cast<__nv_bfloat16*>(&out0);
    auto* y1 = reinterpret_cast<__nv_bfloat16*>(&out1);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      RotatePairBy(__bfloat162float(a[j]) * scale, __bfloat162float(b[j]) * scale, cosines[i + j],
                   sines[i + j], y0[j], y1[j]);
    }
    *x0 = out0;
    *x1 = out1;
    if (t.append && head >= p.num_q_heads) {
      const int64_t offset =
          p.layout.offset_in_layer(t.block, head - p.num_q_heads, t.slot_in_block, i);
      *reinterpret_cast<uint4*>(p.k_cache + offset) = out0;
      *reinterpret_cast<uint4*>(p.k_cache + offset + half_dim) = out1;
    }
  }
  if (!t.append && !scaled) return;
  __nv_bfloat16* v = t.row + static_cast<int64_t>(rotated_heads) * p.head_dim;
  const int v_vectors_per_head = p.head_dim / 8;
  for (int item = threadIdx.x; item < p.num_kv_heads * v_vectors_per_head; item += kRowsThreads) {
    const int kv_head = item / v_vectors_per_head;
    const int dim = item % v_vectors_per_head * 8;
    auto* source = reinterpret_cast<uint4*>(v + kv_head * p.head_dim + dim);
    uint4 value = *source;
    if (scaled) {
      auto* e = reinterpret_cast<__nv_bfloat16*>(&value);
#pragma unroll
      for (int j = 0; j < 8; ++j) e[j] = __float2bfloat16_rn(__bfloat162float(e[j]) * scale);
      *source = value;
    }
    if (t.append) {
      *reinterpret_cast<uint4*>(
          p.v_cache + p.layout.offset_in_layer(t.block, kv_head, t.slot_in_block, dim)) = value;
    }
  }
}

}  // namespace

absl::Status LaunchRopeAppendKv(const RopeAppendParams& p, cudaStream_t stream) {
  if (p.num_tokens == 0) return absl::OkStatus();
  if (p.qkv == nullptr || p.positions == nullptr || p.slot_mapping == nullptr ||
      p.inv_freq == nullptr || p.k_cache == nullptr || p.v_cache == nullptr) {
    return absl::InvalidArgumentError("RopeAppendKv: a required device array is null");
  }
  if (p.scale_rows_by != nullptr && p.scale_hidden <= 0) {
    return absl::InvalidArgumentError("RopeAppendKv: scale_hidden must be positive");
  }
  if (p.head_dim <= 0 || p.head_dim % 2 != 0 || p.num_q_heads <= 0 || p.num_kv_heads <= 0 ||
      p.layout.head_dim != p.head_dim || p.layout.num_kv_heads != p.num_kv_heads ||
      p.layout.block_size <= 0) {
    return absl::InvalidArgumentError("RopeAppendKv: head shape does not match the KV layout");
  }
  constexpr int kThreads = 256;
  const int64_t elements =
      std::max<int64_t>(static_cast<int64_t>(p.num_q_heads + p.num_kv_heads) * (p.head_dim / 2),
                        static_cast<int64_t>(p.num_kv_heads) * p.head_dim);
  const dim3 grid(
      static_cast<unsigned>(p.num_tokens),
      static_cast<unsigned>(std::min<int64_t>(64, (elements + kThreads - 1) / kThreads)));
  // 16-byte accesses: head_dim a multiple of 16 (8 pairs a vector) and 16-byte aligned rows and
  // pool (row and pool offsets are multiples of head_dim).
  const bool rows_kernel = p.num_tokens > kFirstLoadsEarlyMaxTokens && p.head_dim % 16 == 0 &&
                           p.head_dim / 2 <= kRowsMaxHalfDim &&
                           reinterpret_cast<uintptr_t>(p.qkv) % 16 == 0 &&
                           reinterpret_cast<uintptr_t>(p.k_cache) % 16 == 0 &&
                           reinterpret_cast<uintptr_t>(p.v_cache) % 16 == 0;
  if (p.num_tokens <= kFirstLoadsEarlyMaxTokens) {
    RopeAppendKvPairsKernel<true><<<grid, kThreads, 0, stream>>>(p);
  } else if (rows_kernel) {
    RopeAppendKvRowsKernel<<<static_cast<unsigned>(p.num_tokens), kRowsThreads, 0, stream>>>(p);
  } else {
    RopeAppendKvPairsKernel<false><<<grid, kThreads, 0, stream>>>(p);
  }
  LLM_CUDA_CHECK_LAUNCH(RopeAppendKvKernel);
  return absl::OkStatus();
}

}  // namespace llm::cuda
