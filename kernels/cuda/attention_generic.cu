// The generic paged attention kernel: the plain, untiled algorithm for any even head_dim up to 256,
// used where the flash kernels have no instantiation (their head dims are 64 and 128). The backend
// logs once when it falls back to it. Same math as kernels/backend.h PagedAttention, fp32
// throughout.
//
// One thread block per (token, query head), kWarps warps. Warp w visits positions w, w + kWarps,
// ... of the token's visible range [0, min(kv_len, position + 1)): the lanes split the head's
// columns (lane + 32 i), reduce the dot product q.k with shuffles, and keep an online softmax (m,
// l, O) per warp; the warps merge their (m, l, O) through shared memory at the end.
#include <cuda_bf16.h>

#include <cmath>

#include "kernels/cuda/attention_params.h"
#include "kernels/cuda/cuda_check.h"

namespace llm::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kColumnsPerLane = kGenericAttentionMaxHeadDim / 32;

__global__ void __launch_bounds__(kWarps * 32)
    GenericAttentionKernel(const PagedAttentionParams params) {
  const int token = blockIdx.x;
  const int head = blockIdx.y;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int D = params.head_dim;
  // The token's sequence: the last sequence whose first query token is <= token.
  int low = 0;
  int high = params.num_seqs - 1;
  while (low < high) {
    const int middle = (low + high + 1) / 2;
    if (params.query_start[middle] <= token)
      low = middle;
    else
      high = middle - 1;
  }
  const int seq = low;
  const int kv_head = head / (params.num_q_heads / params.num_kv_heads);
  const int kv_end = min(params.kv_lens[seq], params.positions[token] + 1);
  const int* block_table =
      params.block_tables + static_cast<int64_t>(seq) * params.block_table_stride;
  const kvcache::KvLayout layout = params.layout;

  float q[kColumnsPerLane];
  float o[kColumnsPerLane];
  const __nv_bfloat16* q_row = params.q + token * params.q_row_stride + head * D;
#pragma unroll
  for (int i = 0; i < kColumnsPerLane; ++i) {
    const int column = lane + 32 * i;
    q[i] = column < D ? __bfloat162float(q_row[column]) * params.softmax_scale : 0.f;
    o[i] = 0.f;
  }
  float running_max = -INFINITY;
  float running_sum = 0.f;
  for (int position = warp; position < kv_end; position += kWarps) {
    const kvcache::PagedPosition paged =
        kvcache::LocatePosition(block_table, layout.block_size, position);
    const int64_t offset = layout.offset_in_layer(paged.block, kv_head, paged.slot, 0);
    float dot = 0.f;
#pragma unroll
    for (int i = 0; i < kColumnsPerLane; ++i) {
      const int column = lane + 32 * i;
      if (column < D) dot += q[i] * __bfloat162float(params.k_cache[offset + column]);
    }
#pragma unroll
    for (int mask = 16; mask > 0; mask /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, mask);
    const float new_max = fmaxf(running_max, dot);
    const float correction = expf(running_max - new_max);
    const float p = expf(dot - new_max);
    running_sum = running_sum * correction + p;
#pragma unroll
    for (int i = 0; i < kColumnsPerLane; ++i) {
      const int column = lane + 32 * i;
      const float v = column < D ? __bfloat162float(params.v_cache[offset + column]) : 0.f;
      o[i] = o[i] * correction + p * v;
    }
    running_max = new_max;
  }

  __shared__ float merge_o[kWarps][kGenericAttentionMaxHeadDim];
  __shared__ float merge_max[kWarps];
  __shared__ float merge_sum[kWarps];
#pragma unroll
  for (int i = 0; i < kColumnsPerLane; ++i) {
    const int column = lane + 32 * i;
    if (column < D) merge_o[warp][column] = o[i];
  }
  if (lane == 0) {
    merge_max[warp] = running_max;
    merge_sum[warp] = running_sum;
  }
  __syncthreads();
  float max_all = -INFINITY;
  for (int w = 0; w < kWarps; ++w) max_all = fmaxf(max_all, merge_max[w]);
  for (int column = threadIdx.x; column < D; column += blockDim.x) {
    float sum = 0.f;
    float value = 0.f;
    for (int w = 0; w < kWarps; ++w) {
      if (merge_max[w] == -INFINITY) continue;
      const float weight = expf(merge_max[w] - max_all);
      sum += weight * merge_sum[w];
      value += weight * merge_o[w][column];
    }
    params.out[token * params.out_row_stride + head * D + column] =
        __float2bfloat16_rn(sum > 0.f ? value / sum : 0.f);
  }
}

}  // namespace

absl::Status LaunchGenericAttention(const PagedAttentionParams& params, cudaStream_t stream) {
  if (params.head_dim > kGenericAttentionMaxHeadDim) {
    return absl::InvalidArgumentError("generic attention: head_dim above 256 is not supported");
  }
  if (params.num_tokens == 0) return absl::OkStatus();
  if (params.num_q_heads > 65535)
    return absl::InvalidArgumentError("generic attention: too many heads");
  const dim3 grid(params.num_tokens, params.num_q_heads);
  GenericAttentionKernel<<<grid, kWarps * 32, 0, stream>>>(params);
  LLM_CUDA_CHECK_LAUNCH(GenericAttentionKernel);
  return absl::OkStatus();
}

}  // namespace llm::cuda
