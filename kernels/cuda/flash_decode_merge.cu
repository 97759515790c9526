// Merges the split-KV partial results of flash decode (flash_decode.cuh) by their log-sum-exp:
//   lse_max = max_c lse_c,  w_c = 2^(lse_c - lse_max),  O = sum_c w_c O_c / sum_c w_c
// One thread block per (token, query head), one thread per output column. Splits with lse = -inf
// (no position of theirs visible to the token) get weight 0.
#include <cuda_bf16.h>

#include <cmath>

#include "kernels/cuda/attention_params.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/flash_decode.cuh"

namespace llm::cuda {
namespace {

__global__ void MergeSplitsKernel(const PagedAttentionParams params) {
  const int token = blockIdx.x / params.num_q_heads;
  const int head = blockIdx.x % params.num_q_heads;
  if (params.mixed_batch) {  // skip tokens of sequences that flash prefill handles
    int low = 0;
    int high = params.num_seqs - 1;
    while (low < high) {
      const int middle = (low + high + 1) / 2;
      if (params.query_start[middle] <= token)
        low = middle;
      else
        high = middle - 1;
    }
    const int rows = (params.query_start[low + 1] - params.query_start[low]) *
                     (params.num_q_heads / params.num_kv_heads);
    if (rows > kFlashDecodeMaxRows) return;
  }
  const int num_splits = params.num_splits;
  const int64_t base = (static_cast<int64_t>(token) * params.num_q_heads + head) * num_splits;
  const float* lse = params.partial_lse + base;
  float lse_max = -INFINITY;
  for (int split = 0; split < num_splits; ++split) lse_max = fmaxf(lse_max, lse[split]);
  for (int column = threadIdx.x; column < params.head_dim; column += blockDim.x) {
    float sum = 0.f;
    float value = 0.f;
    if (lse_max != -INFINITY) {
      for (int split = 0; split < num_splits; ++split) {
        const float weight = exp2f(lse[split] - lse_max);
        sum += weight;
        value += weight * params.partial_out[(base + split) * params.head_dim + column];
      }
    }
    params.out[token * params.out_row_stride + head * params.head_dim + column] =
        __float2bfloat16_rn(sum > 0.f ? value / sum : 0.f);
  }
}

}  // namespace

absl::Status LaunchMergeSplits(const PagedAttentionParams& params, cudaStream_t stream) {
  if (params.num_tokens == 0) return absl::OkStatus();
  const int64_t blocks = static_cast<int64_t>(params.num_tokens) * params.num_q_heads;
  MergeSplitsKernel<<<static_cast<unsigned>(blocks), params.head_dim, 0, stream>>>(params);
  LLM_CUDA_CHECK_LAUNCH(MergeSplitsKernel);
  return absl::OkStatus();
}

}  // namespace llm::cuda
