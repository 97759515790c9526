// --sections boundary: what one step of a dependent chain costs, the floor under a decode step's
// per-kernel overhead (docs/PERFORMANCE.md, eighth session).
//
// Kernel chains: a CUDA graph of kChainLength launches of one kernel (2 blocks of 256 threads per
// SM, like the batch-1 products), replayed; the median replay over kChainLength is the cost of
// one launch in the chain:
//   empty      the kernel does nothing (launch and retirement only);
//   L2 read    thread 0 of each block reads the word its block's previous launch wrote and writes
//              it + 1 (one dependent L2 round trip per launch, as a product reading its input);
//   DRAM read  the same plus one read of a word no earlier launch read, 512 bytes from the next
//              block's, from a 1 GiB buffer (a DRAM round trip per launch: a product's first
//              weight bytes);
//   clusters   the batch-1 attention's launch shape (32 blocks of 128 threads), plain, in
//              thread-block clusters of 8 (its split merge) and with the merge's two cluster
//              barriers, alone and alternating with a product-shaped empty launch.
// Streaming reads: chains of launches that each read 1-16 MB as the GEMV reads its weights, and
// 4-16 MB through a shared-memory ring by TMA boxes (tma_stream.cuh) or by cp.async, each block
// owning whole rows as a column-owning GEMM would.
// Grid barriers: one cooperative launch (a block per SM) passing kChainLength barriers (an
// arrival counter and a generation word in global memory), without and with the L2 read of a
// word another block wrote before the barrier, and cooperative groups' grid.sync(): what a
// persistent kernel pays per phase instead.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/bench_check.h"
#include "bench/bench_common.h"
#include "bench/device_timing.h"
#include "bench/tma_stream.cuh"
#include "kernels/cuda/mma.cuh"

namespace llm::bench {
namespace {

constexpr int kChainLength = 256;
constexpr int kThreads = 256;
constexpr size_t kDramBytes = size_t{1} << 30;
// 2M slots: no slot is read twice in the section's 24 x 256 launches.
constexpr int kLineBytes = 512;

__global__ void EmptyKernel() {}

// Two cluster barriers, as flash decode's cluster merge passes them (the first with release /
// acquire, the second relaxed).
__global__ void ClusterBarriersKernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.aligned;\nbarrier.cluster.wait.aligned;\n" ::: "memory");
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\nbarrier.cluster.wait.aligned;\n" ::
                   : "memory");
#endif
}

// XOR of the 16-byte chunks [first, end) of `data`, `stride` apart, four loads in flight (the
// GEMV's load pattern: evict-first, issued before any is used).
__device__ uint32_t XorStrided(const uint4* data, size_t first, size_t end, size_t stride) {
  uint32_t x = 0;
  for (size_t i = first; i < end; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      v[u] = i + u * stride < end ? __ldcs(data + i + u * stride) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) x ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  return x;
}

// The warp's XOR into `word` (so that the compiler keeps every load).
__device__ void StoreWarpXor(uint32_t x, unsigned* word) {
  for (int mask = 16; mask > 0; mask /= 2) x ^= __shfl_xor_sync(0xffffffffu, x, mask);
  if (threadIdx.x % 32 == 0) *word = x;
}

// Reads `rows` rows of `row_chunks` chunks, one row per warp (8 warps a block): the batch-1
// GEMV's order over a weight matrix, without the dot product.
__global__ void RowReadKernel(const uint4* data, int rows, int row_chunks, unsigned* words) {
  const int row = blockIdx.x * 8 + threadIdx.x / 32;
  const uint32_t x = row < rows ? XorStrided(data + static_cast<size_t>(row) * row_chunks,
                                             threadIdx.x % 32, row_chunks, 32)
                                : 0;
  StoreWarpXor(x, words + row % 1024 * 32);
}

// The same rows, but each block's 8 rows (one contiguous region) read together: its threads
// stride over the region 16 bytes apart, so the GPU streams one region a block instead of one row
// a warp (a GEMV in this order would reduce each row's partial sums across its warps).
__global__ void BlockRegionReadKernel(const uint4* data, int rows, int row_chunks,
                                      unsigned* words) {
  const int first_row = blockIdx.x * 8;
  const size_t chunks = static_cast<size_t>(min(8, rows - first_row)) * row_chunks;
  const uint32_t x = XorStrided(data + static_cast<size_t>(first_row) * row_chunks, threadIdx.x,
                                chunks, blockDim.x);
  StoreWarpXor(x, words + (first_row + threadIdx.x / 32) % 1024 * 32);
}

// Streams `chunks` 16-byte chunks grid-stride, one word per warp.
__global__ void StreamReadKernel(const uint4* data, size_t chunks, unsigned* words) {
  const size_t thread = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  const uint32_t x = XorStrided(data, thread, chunks, static_cast<size_t>(gridDim.x) * blockDim.x);
  StoreWarpXor(x, words + thread / 32 % 1024 * 32);
}

// The TMA streams' pattern by cp.async instead: block b of 128 owns rows [first_row + b R,
// first_row + (b + 1) R) of a [rows][2048] bf16 matrix and walks them along k, 256 columns (512
// bytes a row) a slot, kStreamStages slots in flight (a cp.async group each), all 128 threads
// copying 16 bytes at a time: the load-based counterpart of a column-owning TMA GEMM's stream.
constexpr int kStreamStages = 8;
__global__ void CpAsyncStreamKernel(const char* matrix, int first_row, int rows_per_block,
                                    unsigned* words) {
  extern __shared__ __align__(16) unsigned char slots[];
  constexpr int kRowBytes = 4096, kSlotRowBytes = 512, kSteps = kRowBytes / kSlotRowBytes;
  const int chunks = rows_per_block * (kSlotRowBytes / 16);  // 16-byte chunks a slot
  const char* rows =
      matrix + (static_cast<size_t>(first_row) + static_cast<size_t>(blockIdx.x) * rows_per_block) *
                   kRowBytes;
  auto issue = [&](int step) {
    if (step < kSteps) {
      unsigned char* slot = slots + (step % kStreamStages) * rows_per_block * kSlotRowBytes;
      for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
        const int row = c / (kSlotRowBytes / 16), column = c % (kSlotRowBytes / 16);
        const char* source =
            rows + static_cast<size_t>(row) * kRowBytes + step * kSlotRowBytes + column * 16;
        cuda::CpAsync16(slot + c * 16, source, true);
      }
    }
    cuda::CpAsyncCommit();
  };
  for (int step = 0; step < kStreamStages; ++step) issue(step);
  uint32_t x = 0;
  for (int step = 0; step < kSteps; ++step) {
    cuda::CpAsyncWait<kStreamStages - 1>();
    __syncthreads();
    x ^= reinterpret_cast<const uint32_t*>(slots + (step % kStreamStages) * rows_per_block *
                                                       kSlotRowBytes)[threadIdx.x];
    __syncthreads();
    issue(step + kStreamStages);
  }
  StoreBlockXor(x, words);
}

__global__ void L2ReadKernel(unsigned* words) {
  if (threadIdx.x == 0) words[blockIdx.x * 32] += 1;
}

__global__ void DramReadKernel(unsigned* words, const unsigned* dram, size_t launch) {
  if (threadIdx.x != 0) return;
  const size_t lines = kDramBytes / kLineBytes;
  const size_t line = (launch * gridDim.x + blockIdx.x) % lines;
  words[blockIdx.x * 32] += dram[line * (kLineBytes / sizeof(unsigned))] + 1;
}

// Sense-free barrier: the last block to arrive resets the counter and bumps the generation that
// the others spin on (acquire / release at GPU scope).
__device__ void GridBarrier(unsigned* count, volatile unsigned* generation) {
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned my_generation = *generation;
    __threadfence();
    if (atomicAdd(count, 1u) == gridDim.x - 1) {
      *count = 0;
      __threadfence();
      atomicAdd(const_cast<unsigned*>(generation), 1u);
    } else {
      while (*generation == my_generation) {
      }
    }
    __threadfence();
  }
  __syncthreads();
}

// kChainLength barriers; with `read_peer`, after each one thread 0 reads the word the next block
// wrote before it (and writes its own for the next round).
__global__ void BarrierChainKernel(unsigned* count, unsigned* generation, unsigned* words,
                                   bool read_peer) {
  unsigned value = blockIdx.x;
  for (int step = 0; step < kChainLength; ++step) {
    if (read_peer && threadIdx.x == 0) words[blockIdx.x * 32] = value + step;
    GridBarrier(count, generation);
    if (read_peer && threadIdx.x == 0) {
      value += *static_cast<volatile unsigned*>(&words[((blockIdx.x + 1) % gridDim.x) * 32]);
    }
  }
  if (threadIdx.x == 0 && value == 0xffffffffu) words[0] = value;  // keeps the reads
}

// The same chain of barriers with cooperative groups' grid.sync().
__global__ void GridSyncChainKernel() {
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  for (int step = 0; step < kChainLength; ++step) grid.sync();
}

// Median microseconds per launch of a chain of kChainLength launches recorded into one graph;
// `launch(replay, i)` queues launch i. With fresh_per_replay, each timed replay runs a graph of
// its own (recorded with its replay index), so that launches can read memory no earlier replay
// touched.
template <typename Launch>
double ChainUsPerLaunch(cudaStream_t stream, bool fresh_per_replay, Launch&& launch) {
  constexpr int kWarmup = 3, kTimed = 21;
  std::vector<cudaGraphExec_t> execs(fresh_per_replay ? kWarmup + kTimed : 1);
  for (size_t replay = 0; replay < execs.size(); ++replay) {
    cudaGraph_t graph = nullptr;
    BENCH_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < kChainLength; ++i) launch(static_cast<int>(replay), i);
    BENCH_CHECK(cudaStreamEndCapture(stream, &graph));
    BENCH_CHECK(cudaGraphInstantiate(&execs[replay], graph, 0));
    BENCH_CHECK(cudaGraphDestroy(graph));
  }
  const double ms = MedianMs(stream, kWarmup, kTimed, [&](int replay) {
    BENCH_CHECK(cudaGraphLaunch(execs[replay % execs.size()], stream));
  });
  for (cudaGraphExec_t exec : execs) BENCH_CHECK(cudaGraphExecDestroy(exec));
  return ms * 1e3 / kChainLength;
}

}  // namespace

void BenchKernelBoundary(cudaStream_t stream, int sms, std::vector<Result>& results) {
  const int blocks = 2 * sms;
  const size_t word_count = static_cast<size_t>(std::max(blocks, 1024)) * 32 + 64;
  unsigned* words = DeviceAlloc<unsigned>(word_count);
  unsigned* dram = DeviceAlloc<unsigned>(kDramBytes / sizeof(unsigned));
  BENCH_CHECK(cudaMemset(words, 0, word_count * sizeof(unsigned)));
  BENCH_CHECK(cudaMemset(dram, 1, kDramBytes));

  std::printf("\n%-46s %10s\n", "dependent chain step (graph or grid barrier)", "us");
  auto report = [&](const char* shape, double us, const char* note) {
    std::printf("%-46s %10.2f\n", shape, us);
    results.push_back(Result{"boundary", shape, us * 1e-3, 0, 0, note});
  };
  report("graphed launch, empty kernel",
         ChainUsPerLaunch(stream, false,
                          [&](int, int) { EmptyKernel<<<blocks, kThreads, 0, stream>>>(); }),
         "per launch of 256 in one graph, 2 blocks per SM");
  report("graphed launch + dependent L2 read",
         ChainUsPerLaunch(stream, false,
                          [&](int, int) { L2ReadKernel<<<blocks, kThreads, 0, stream>>>(words); }),
         "per launch of 256 in one graph, 2 blocks per SM");
  report("graphed launch + L2 read + DRAM read",
         ChainUsPerLaunch(stream, true,
                          [&](int replay, int i) {
                            const size_t launch = static_cast<size_t>(replay) * kChainLength + i;
                            DramReadKernel<<<blocks, kThreads, 0, stream>>>(words, dram, launch);
                          }),
         "per launch of 256 in one graph, 2 blocks per SM; each block reads a word no earlier "
         "launch read");

  // 32 blocks of 128 threads, in clusters of `cluster` (1: a plain launch).
  auto attention_shaped = [&](void (*kernel)(), unsigned cluster) {
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(32);
    config.blockDim = dim3(128);
    config.stream = stream;
    cudaLaunchAttribute attribute[1];
    attribute[0].id = cudaLaunchAttributeClusterDimension;
    attribute[0].val.clusterDim.x = cluster;
    attribute[0].val.clusterDim.y = 1;
    attribute[0].val.clusterDim.z = 1;
    config.attrs = attribute;
    config.numAttrs = cluster > 1 ? 1 : 0;
    BENCH_CHECK(cudaLaunchKernelEx(&config, kernel));
  };
  report("graphed launch, empty, 32 blocks of 128",
         ChainUsPerLaunch(stream, false, [&](int, int) { attention_shaped(EmptyKernel, 1); }),
         "per launch of 256 in one graph");
  report("  the same in clusters of 8",
         ChainUsPerLaunch(stream, false, [&](int, int) { attention_shaped(EmptyKernel, 8); }),
         "per launch of 256 in one graph");
  report("  the same + two cluster barriers",
         ChainUsPerLaunch(stream, false,
                          [&](int, int) { attention_shaped(ClusterBarriersKernel, 8); }),
         "per launch of 256 in one graph");
  // A product-shaped empty launch, then an attention-shaped one: the cost of the pair.
  auto pair_us = [&](void (*attention_kernel)(), unsigned cluster) {
    return 2 * ChainUsPerLaunch(stream, false, [&](int, int i) {
             if (i % 2 == 0) {
               EmptyKernel<<<blocks, kThreads, 0, stream>>>();
             } else {
               attention_shaped(attention_kernel, cluster);
             }
           });
  };
  report("empty 2 blocks/SM + empty 32 blocks, a pair", pair_us(EmptyKernel, 1),
         "per pair of 128 in one graph");
  report("  the same, the 32 blocks in clusters of 8", pair_us(ClusterBarriersKernel, 8),
         "per pair of 128 in one graph; the cluster kernel passes two cluster barriers");

  unsigned* barrier = DeviceAlloc<unsigned>(64);
  for (const bool read_peer : {false, true}) {
    BENCH_CHECK(cudaMemset(barrier, 0, 64 * sizeof(unsigned)));
    unsigned* count = barrier;
    unsigned* generation = barrier + 32;
    bool peer = read_peer;
    void* args[] = {&count, &generation, &words, &peer};
    const double ms = MedianMs(stream, 2, 11, [&](int) {
      BENCH_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(BarrierChainKernel),
                                              dim3(sms), dim3(kThreads), args, 0, stream));
    });
    report(read_peer ? "grid barrier + L2 read of a peer's word" : "grid barrier",
           ms * 1e3 / kChainLength, "per barrier of 256 in one cooperative launch, 1 block per SM");
  }
  {
    const double ms = MedianMs(stream, 2, 11, [&](int) {
      BENCH_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(GridSyncChainKernel),
                                              dim3(sms), dim3(kThreads), nullptr, 0, stream));
    });
    report("grid barrier (cooperative groups' grid.sync)", ms * 1e3 / kChainLength,
           "per barrier of 256 in one cooperative launch, 1 block per SM");
  }
  cudaFree(barrier);

  // Chains of streaming reads, consecutive launches reading consecutive regions of the 1 GiB
  // buffer (a region comes back after 1 GiB of other reads), so L2 never serves one: time = fixed
  // cost + bytes / bandwidth, the fixed cost being what a batch-1 product pays beyond its bytes
  // when it streams like this. `read(region)` queues one launch over `bytes` at `region`.
  auto region_chain_us = [&](size_t bytes, auto&& read) {
    const size_t regions = kDramBytes / bytes;
    return ChainUsPerLaunch(stream, true, [&](int replay, int i) {
      const size_t region = (static_cast<size_t>(replay) * kChainLength + i) % regions;
      read(reinterpret_cast<const uint4*>(reinterpret_cast<const char*>(dram) + region * bytes));
    });
  };
  auto report_rate = [&](const std::string& shape, size_t bytes, double us, const char* note) {
    const double gbytes_per_s = bytes / (us * 1e-6) / 1e9;
    std::printf("%-46s %10.2f %10.1f\n", shape.c_str(), us, gbytes_per_s);
    results.push_back(Result{"boundary", shape, us * 1e-3, 0, gbytes_per_s, note});
  };
  auto grid_stride = [&](size_t bytes) {
    return [&, bytes](const uint4* data) {
      StreamReadKernel<<<blocks, kThreads, 0, stream>>>(data, bytes / 16, words);
    };
  };
  std::printf("\n%-46s %10s %10s\n", "graphed streaming read (GEMV's load pattern)", "us", "GB/s");
  for (const size_t megabytes : {1, 2, 4, 8, 16}) {
    const size_t bytes = megabytes << 20;
    report_rate("stream read " + std::to_string(megabytes) + " MB", bytes,
                region_chain_us(bytes, grid_stride(bytes)),
                "per launch of 256 in one graph, 2 blocks of 256 threads per SM");
  }
  // The batch-1 products' bytes read as the GEMV orders them (a warp a row), grid-stride, and a
  // block's 8 rows together: o and qkv's 4 KB rows, down's 11 KB rows.
  struct RowShape {
    const char* name;
    int rows;
    int row_bytes;
  };
  for (const RowShape shape : {RowShape{"rows: o, 2048 x 4 KB", 2048, 4096},
                               RowShape{"rows: qkv, 2560 x 4 KB", 2560, 4096},
                               RowShape{"rows: down, 2048 x 11 KB", 2048, 11264}}) {
    const size_t bytes = static_cast<size_t>(shape.rows) * shape.row_bytes;
    const unsigned row_blocks = (shape.rows + 7) / 8;
    report_rate(shape.name, bytes,
                region_chain_us(bytes,
                                [&](const uint4* data) {
                                  RowReadKernel<<<row_blocks, kThreads, 0, stream>>>(
                                      data, shape.rows, shape.row_bytes / 16, words);
                                }),
                "per launch of 256 in one graph, a warp a row, 8 warps a block");
    report_rate(std::string(shape.name) + ", grid-stride", bytes,
                region_chain_us(bytes, grid_stride(bytes)),
                "per launch of 256 in one graph, the same bytes read grid-stride");
    report_rate(std::string(shape.name) + ", by block", bytes,
                region_chain_us(bytes,
                                [&](const uint4* data) {
                                  BlockRegionReadKernel<<<row_blocks, kThreads, 0, stream>>>(
                                      data, shape.rows, shape.row_bytes / 16, words);
                                }),
                "per launch of 256 in one graph, a block's 8 rows read together");
  }
  // The same streams by TMA (tma_stream.cuh), a block per SM with 8 slots, every block owning R =
  // rows / 128 rows and walking them along k in boxes of R rows x 128 bytes, 1 or 4 boxes (k steps)
  // a slot, as a column-owning TMA GEMM streams its weights: the fixed cost a TMA-fed product pays
  // beyond its bytes, against the loads above.
  const uint64_t matrix_rows = kDramBytes / 4096;
  CUtensorMap x_map;  // not read (no activation tile), but the kernel takes one
  if (!EncodeBf16Map(&x_map, dram, 64, 2048, 64)) {
    std::printf("no cuTensorMapEncodeTiled: TMA streams skipped\n");
  } else {
    constexpr int kStages = 8;
    for (const int k_boxes : {1, 4}) {
      for (const size_t megabytes : {4, 8, 16}) {
        const size_t bytes = megabytes << 20;
        const int rows = static_cast<int>(bytes / 4096);
        const int tile_rows = rows / 128;  // 8, 16, 32
        CUtensorMap w_map;
        if (!EncodeBf16Map(&w_map, dram, matrix_rows, 2048, tile_rows)) continue;
        const int shared_bytes = 1024 + kStages * tile_rows * 128 * k_boxes;
        BENCH_CHECK(cudaFuncSetAttribute(
            TensorStreamKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared_bytes));
        const size_t regions = matrix_rows / rows;
        const double us = ChainUsPerLaunch(stream, true, [&](int replay, int i) {
          const size_t region = (static_cast<size_t>(replay) * kChainLength + i) % regions;
          TensorStreamKernel<<<sms, 128, shared_bytes, stream>>>(
              w_map, x_map, static_cast<int>(region * rows), 128, tile_rows, tile_rows, k_boxes,
              kStages, false, words);
        });
        report_rate("TMA " + std::to_string(megabytes) + " MB: " + std::to_string(tile_rows) +
                        "-row boxes, " + std::to_string(k_boxes) + " a slot",
                    bytes, us,
                    "per launch of 256 in one graph, 128 blocks of R rows, 8 slots in flight");
      }
    }
  }
  for (const size_t megabytes : {4, 8, 16}) {
    const size_t bytes = megabytes << 20;
    const int rows = static_cast<int>(bytes / 4096);
    const int rows_per_block = rows / 128;
    const int shared_bytes = kStreamStages * rows_per_block * 512;
    BENCH_CHECK(cudaFuncSetAttribute(CpAsyncStreamKernel,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, shared_bytes));
    const size_t regions = matrix_rows / rows;
    const double us = ChainUsPerLaunch(stream, true, [&](int replay, int i) {
      const size_t region = (static_cast<size_t>(replay) * kChainLength + i) % regions;
      CpAsyncStreamKernel<<<128, 128, shared_bytes, stream>>>(reinterpret_cast<const char*>(dram),
                                                              static_cast<int>(region * rows),
                                                              rows_per_block, words);
    });
    report_rate("cp.async " + std::to_string(megabytes) + " MB: " + std::to_string(rows_per_block) +
                    " rows x 512 B a slot",
                bytes, us,
                "per launch of 256 in one graph, 128 blocks of R rows, 8 slots in flight");
  }
  cudaFree(words);
  cudaFree(dram);
}

}  // namespace llm::bench
