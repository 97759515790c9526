// Merges the split-KV partial results of flash decode (flash_decode.cuh) by their log-sum-exp:
//   lse_max = max_c lse_c,  w_c = 2^(lse_c - lse_max),  O = sum_c w_c O_c / sum_c w_c
// One thread block per (token, query head), one thread per output column. Splits with lse = -inf
// (no position of theirs visible to the token) get weight 0. Launched with programmatic dependent
// launch (sm_90): its blocks start while flash decode finishes and wait in griddepcontrol.wait.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "kernels/cuda/attention_params.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/flash_decode.cuh"
#include "kernels/cuda/grid_dependency.cuh"

namespace llm::cuda {
namespace {

// One block per (token, query head), blockDim = head_dim. The split weights are computed once per
// block into shared memory; each thread then sums its column over the splits with 8 loads in
// flight. In a mixed batch (flash prefill takes the long sequences) the blocks are (sequence,
// token, head) over the at most MergeTokensPerSequence tokens of a sequence flash decode takes, so
// prefill chunks add none. (Before: a block per token and head that searched for its sequence and
// left; 41 us a layer of a 2048-token chunk at TinyLlama's shape on an H100, eleventh session.)
__host__ __device__ inline int MergeTokensPerSequence(const PagedAttentionParams& params) {
  return kFlashDecodeMaxRows / (params.num_q_heads / params.num_kv_heads);
}

__global__ void MergeSplitsKernel(const PagedAttentionParams params) {
  extern __shared__ float weights[];  // [num_splits]
  __shared__ float reduce[32];
  int token = blockIdx.x / params.num_q_heads;
  const int head = blockIdx.x % params.num_q_heads;
  if (params.mixed_batch) {  // token is (sequence, token of it); skip what flash prefill handles
    const int per_sequence = MergeTokensPerSequence(params);
    const int sequence = token / per_sequence;
    const int begin = params.query_start[sequence];
    const int length = params.query_start[sequence + 1] - begin;
    if (length * (params.num_q_heads / params.num_kv_heads) > kFlashDecodeMaxRows ||
        token % per_sequence >= length) {
      return;
    }
    token = begin + token % per_sequence;
  }
  WaitForPrecedingGrid();  // partial_out / partial_lse come from the flash decode grid
  const int num_splits = params.num_splits;
  const int64_t base = (static_cast<int64_t>(token) * params.num_q_heads + head) * num_splits;
  const float* lse = params.partial_lse + base;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int num_warps = (blockDim.x + 31) / 32;

  float local_max = -INFINITY;
  for (int split = threadIdx.x; split < num_splits; split += blockDim.x) {
    const float value = lse[split];
    weights[split] = value;
    local_max = fmaxf(local_max, value);
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2)
    local_max = fmaxf(local_max, __shfl_xor_sync(0xffffffffu, local_max, offset));
  if (lane == 0) reduce[warp] = local_max;
  __syncthreads();
  float lse_max = -INFINITY;
  for (int w = 0; w < num_warps; ++w) lse_max = fmaxf(lse_max, reduce[w]);
  float local_sum = 0.f;
  for (int split = threadIdx.x; split < num_splits; split += blockDim.x) {
    const float weight = lse_max == -INFINITY ? 0.f : exp2f(weights[split] - lse_max);
    weights[split] = weight;
    local_sum += weight;
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2)
    local_sum += __shfl_xor_sync(0xffffffffu, local_sum, offset);
  __syncthreads();  // everyone has read reduce[] (max) before it holds the sums
  if (lane == 0) reduce[warp] = local_sum;
  __syncthreads();
  float sum = 0.f;
  for (int w = 0; w < num_warps; ++w) sum += reduce[w];

  const float* partial = params.partial_out + base * params.head_dim;
  for (int column = threadIdx.x; column < params.head_dim; column += blockDim.x) {
    float value = 0.f;
    int split = 0;
    for (; split + 8 <= num_splits; split += 8) {
      float loaded[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) loaded[k] = partial[(split + k) * params.head_dim + column];
#pragma unroll
      for (int k = 0; k < 8; ++k) value += weights[split + k] * loaded[k];
    }
    for (; split < num_splits; ++split) {
      value += weights[split] * partial[split * params.head_dim + column];
    }
    params.out[token * params.out_row_stride + head * params.head_dim + column] =
        __float2bfloat16_rn(sum > 0.f ? value / sum : 0.f);
  }
}

// $LLM_CUDA_DECODE_PDL=0 launches the merge as a plain stream-ordered kernel (for comparison).
bool UseProgrammaticLaunch() {
  static const bool enabled = [] {
    const char* value = std::getenv("LLM_CUDA_DECODE_PDL");
    return value == nullptr || std::strcmp(value, "0") != 0;
  }();
  return enabled;
}

}  // namespace

absl::Status LaunchMergeSplits(const PagedAttentionParams& params, cudaStream_t stream) {
  if (params.num_tokens == 0) return absl::OkStatus();
  if (params.num_splits > 8192) {  // the weights live in shared memory
    return absl::InvalidArgumentError("flash decode merge: more than 8192 splits");
  }
  const int64_t tokens =
      params.mixed_batch ? static_cast<int64_t>(params.num_seqs) * MergeTokensPerSequence(params)
                         : params.num_tokens;
  const int64_t blocks = tokens * params.num_q_heads;
  if (blocks == 0) return absl::OkStatus();
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(blocks));
  config.blockDim = dim3(static_cast<unsigned>(params.head_dim));
  // Whole 16-byte groups: compute-sanitizer memcheck caught a 12-byte shared read at the weights
  // of 2 splits (8 bytes) in the tail loop, whose PTX loads are 4-byte ones (ptxas widens them).
  config.dynamicSmemBytes = static_cast<size_t>((params.num_splits + 3) / 4 * 4) * sizeof(float);
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = UseProgrammaticLaunch() ? 1 : 0;
  LLM_CUDA_CHECK(cudaLaunchKernelEx(&config, MergeSplitsKernel, params));
  LLM_CUDA_CHECK_LAUNCH(MergeSplitsKernel);
  return absl::OkStatus();
}

}  // namespace llm::cuda
