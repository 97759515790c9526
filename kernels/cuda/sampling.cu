// Greedy sampling on the device: per row of F32 logits, the argmax (lowest id wins ties, as
// SamplingParams documents) and its log-probability logit[argmax] - logsumexp(row). Rows that need
// temperature / top-k / top-p or top log-probs are sampled on the host by the CPU backend's
// SampleFromLogits (cuda_backend.cc), so the seeded draws match the CPU backend exactly.
//
// A row is cut into slices, one per block of a thread-block cluster (compute capability 9.0; 8
// blocks per row, halved while rows x blocks exceeds twice the SM count). Each thread keeps the
// state (max, lowest index of the max, sum of exp(logit - max)) over 16 logits per round, all
// loads in flight (16-byte loads when rows are 16-byte aligned); warps combine their threads'
// states by shuffles, the block its warps' through shared memory, and each block stores its state
// into block 0's shared memory (distributed shared memory); after one cluster barrier block 0
// combines them and writes the row's result. Devices before 9.0 run one block per row.
// A row of only -inf gives token 0 (the CPU backend's answer) and logprob NaN (-inf - -inf).
// On an H100 (docs/perf/2026-11-24-h100-session3/): one 32000-entry row 11.9 -> 6.0 us in Nsight
// Compute (one 512-thread block per row before, a latency chain on one SM); event-timed launches
// of 1 / 8 / 64 / 256 rows 13.1 / 15.5 / 16.3 / 21.1 -> 7.5 / 8.1 / 11.4 / 18.1 us. The ~3 us
// aimed at for one row was not reached; 16 blocks per row (non-portable clusters) measured no
// faster than 8, and the remaining time was not broken down further.
// Test: tests/kernels/gpu/small_ops_test.cc (against the CPU backend's SampleFromLogits).
#include <cooperative_groups.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_info.h"
#include "kernels/cuda/small_ops.h"

namespace llm::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxClusterBlocks = 8;  // the portable cluster size
constexpr int32_t kNoIndex = 0x7fffffff;

struct ArgmaxState {
  float max;
  int32_t index;
  float sum;  // sum of exp(logit - max)
};

__device__ __forceinline__ ArgmaxState Combine(ArgmaxState a, ArgmaxState b) {
  if (b.max > a.max || (b.max == a.max && b.index < a.index)) {
    const ArgmaxState t = a;
    a = b;
    b = t;
  }
  // a has the larger max (or equal max and lower index).
  const float sum = b.max == -INFINITY ? a.sum : a.sum + b.sum * expf(b.max - a.max);
  return ArgmaxState{a.max, a.index, sum};
}

__device__ __forceinline__ ArgmaxState WarpCombine(ArgmaxState state) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const ArgmaxState other{__shfl_xor_sync(0xffffffffu, state.max, offset),
                            __shfl_xor_sync(0xffffffffu, state.index, offset),
                            __shfl_xor_sync(0xffffffffu, state.sum, offset)};
    state = Combine(state, other);
  }
  return state;
}

// Grid: cluster_blocks blocks per row along x, in clusters of cluster_blocks (1 on devices without
// clusters: one block takes the whole row). kVector logits per load: 4 (16-byte loads) when rows
// start 16-byte aligned (vocab % 4 == 0), else 1; 16 logits per thread per round either way.
template <int kVector>
__global__ void __launch_bounds__(kThreads)
    ArgmaxLogprobKernel(const float* logits, int32_t vocab, int cluster_blocks, int32_t* tokens,
                        float* logprobs) {
  constexpr int kLoads = 16 / kVector;
  const int row_index = blockIdx.x / cluster_blocks;
  const int rank = blockIdx.x % cluster_blocks;
  const float* row = logits + static_cast<int64_t>(row_index) * vocab;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  // Distributed shared memory may be written only once the target block runs: every block
  // arrives now and waits (long since complete) just before its store into block 0.
  if (cluster_blocks > 1) cg::this_cluster().barrier_arrive();
#endif
  // Block `rank` scans the slice [begin, end), whole vectors only.
  const int slice =
      ((vocab + cluster_blocks - 1) / cluster_blocks + kVector - 1) / kVector * kVector;
  const int begin = rank * slice;
  const int end = min(vocab, begin + slice);

  ArgmaxState state{-INFINITY, kNoIndex, 0.f};
  for (int base = begin + threadIdx.x * kVector; base < end; base += kThreads * kLoads * kVector) {
    float loaded[kLoads][kVector];
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
      const int i = base + u * kThreads * kVector;
      if constexpr (kVector == 4) {
        const float4 v = i < end ? *reinterpret_cast<const float4*>(row + i)
                                 : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
        loaded[u][0] = v.x;
        loaded[u][1] = v.y;
        loaded[u][2] = v.z;
        loaded[u][3] = v.w;
      } else {
        loaded[u][0] = i < end ? row[i] : -INFINITY;
      }
    }
    // This round's max with the lowest index (indices grow with u, j and the rounds, so strict
    // comparisons keep the first), then one rescale of the running sum and independent exps.
    float round_max = -INFINITY;
    int32_t round_index = kNoIndex;
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
#pragma unroll
      for (int j = 0; j < kVector; ++j) {
        if (loaded[u][j] > round_max) {
          round_max = loaded[u][j];
          round_index = base + u * kThreads * kVector + j;
        }
      }
    }
    if (round_max > state.max) {
      state.sum = state.max == -INFINITY ? 0.f : state.sum * expf(state.max - round_max);
      state.max = round_max;
      state.index = round_index;
    }
    if (state.max != -INFINITY) {
#pragma unroll
      for (int u = 0; u < kLoads; ++u) {
#pragma unroll
        for (int j = 0; j < kVector; ++j) state.sum += expf(loaded[u][j] - state.max);  // -inf: 0
      }
    }
  }

  __shared__ ArgmaxState warp_states[kThreads / 32];
  __shared__ ArgmaxState block_states[kMaxClusterBlocks];  // in the cluster's block 0
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  state = WarpCombine(state);
  if (lane == 0) warp_states[warp] = state;
  __syncthreads();
  state = lane < kThreads / 32 ? warp_states[lane] : ArgmaxState{-INFINITY, kNoIndex, 0.f};
  state = WarpCombine(state);  // every warp holds the block's state; warp 0's is used

  if (cluster_blocks > 1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const cg::cluster_group cluster = cg::this_cluster();
    cluster.barrier_wait();
    if (threadIdx.x == 0) *cluster.map_shared_rank(&block_states[rank], 0) = state;
    cluster.sync();  // the stores into block 0 are visible to it
    if (rank != 0) return;
    state = lane < cluster_blocks ? block_states[lane] : ArgmaxState{-INFINITY, kNoIndex, 0.f};
    state = WarpCombine(state);
#else
    __trap();  // cluster_blocks > 1 only on compute capability >= 9.0
#endif
  }
  if (threadIdx.x == 0) {
    if (state.index == kNoIndex) {  // every logit is -inf
      tokens[row_index] = 0;
      logprobs[row_index] = NAN;
    } else {
      tokens[row_index] = state.index;
      logprobs[row_index] = -logf(state.sum);  // logit - (max + log(sum)) with logit == max
    }
  }
}

// Blocks per row: 8 (a portable cluster), halved while the rows would need more than two blocks
// per SM; 1 without clusters. Measured on an H100, event-timed launches of 64 / 256 rows: 1 block
// per row 13.1 / 18.0 us, 2: 11.6 / 19.7, 4: 11.3 / 22.9, 8: 12.3 / - (1 row: 9.9, 9.1, 8.1, 7.3).
int ClusterBlocksPerRow(int32_t rows) {
  const DeviceInfo& device = CurrentDeviceInfo();
  if (device.major < 9) return 1;  // no clusters before compute capability 9.0
  const int num_sms = std::max(1, device.num_sms);
  int blocks = kMaxClusterBlocks;
  while (blocks > 1 && static_cast<int64_t>(rows) * blocks > 2 * num_sms) blocks /= 2;
  return blocks;
}

}  // namespace

absl::Status LaunchArgmaxLogprob(const float* logits, int32_t rows, int32_t vocab, int32_t* tokens,
                                 float* logprobs, cudaStream_t stream) {
  if (rows == 0) return absl::OkStatus();
  if (logits == nullptr || tokens == nullptr || logprobs == nullptr || rows < 0 || vocab <= 0) {
    return absl::InvalidArgumentError("ArgmaxLogprob: bad arguments");
  }
  const int cluster_blocks = ClusterBlocksPerRow(rows);
  if (static_cast<int64_t>(rows) * cluster_blocks > 0x7fffffff) {
    return absl::InvalidArgumentError("ArgmaxLogprob: too many rows for one grid");
  }
  const bool vectors = vocab % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0;
  auto* kernel = vectors ? ArgmaxLogprobKernel<4> : ArgmaxLogprobKernel<1>;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(rows * cluster_blocks));
  config.blockDim = dim3(kThreads);
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeClusterDimension;
  attribute[0].val.clusterDim.x = static_cast<unsigned>(cluster_blocks);
  attribute[0].val.clusterDim.y = 1;
  attribute[0].val.clusterDim.z = 1;
  config.attrs = attribute;
  config.numAttrs = cluster_blocks > 1 ? 1 : 0;
  LLM_CUDA_CHECK(
      cudaLaunchKernelEx(&config, kernel, logits, vocab, cluster_blocks, tokens, logprobs));
  LLM_CUDA_CHECK_LAUNCH(ArgmaxLogprobKernel);
  return absl::OkStatus();
}

}  // namespace llm::cuda
