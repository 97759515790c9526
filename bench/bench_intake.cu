// --sections intake: how many bytes a second one SM can take in from DRAM, and whether reading a
// small L2-resident buffer beside the stream (a GEMM's activations) comes out of that share. The
// question behind it (docs/PERFORMANCE.md, ninth session): the batch-64 products that cuBLASLt
// runs on 64-80 CTAs stream at 1.3-1.8 TB/s, and every GEMM of our own measured so far took in
// 22-26 GB/s per busy SM; is that a per-SM ceiling, or what those kernels kept in flight?
//
// Each kernel runs G blocks, one per SM (each asks for more than half an SM's shared memory), each
// streaming its own share of a 256 MB region (never served by L2), in three ways:
//   loads   T threads, L 16-byte evict-first loads in flight per thread (T * L * 16 bytes per SM),
//           optionally with R loads of a 256 KB L2-resident buffer per streamed load (R = 1: as
//           many activation bytes as weight bytes);
//   bulk    warp 0 keeping S stages of B bytes in flight into a shared-memory ring by
//           cp.async.bulk, a stage being one copy or many copies of a segment of every
//           weight row (a k-split GEMM's slice), optionally with an L2-resident copy per stage;
//   tensor  a TMA tensor map over the region as a [rows][2048] bf16 matrix, boxes of 64 columns
//           x R rows (128-byte swizzle) walking each row tile along k, as a TMA GEMM reads its
//           weights, optionally with an 8 KB box of a [64][2048] L2-resident matrix per stage.
// GB/s counts the streamed (DRAM) bytes only.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/bench_check.h"
#include "bench/bench_common.h"
#include "bench/device_timing.h"
#include "bench/tma_stream.cuh"

namespace llm::bench {
namespace {

constexpr size_t kStreamBytes = size_t{256} << 20;
constexpr size_t kL2Bytes = size_t{256} << 10;
constexpr int kOneBlockPerSmBytes = 120 * 1024;

__device__ __forceinline__ uint32_t Xor4(const uint4& v) { return v.x ^ v.y ^ v.z ^ v.w; }

// Block b streams chunks [b * per_block, (b + 1) * per_block) of `data`, kLoads loads in flight
// per thread; per streamed chunk kL2Ratio chunks of the L2 buffer.
template <int kLoads, int kL2Ratio>
__global__ void LoadIntakeKernel(const uint4* data, size_t per_block, const uint4* l2,
                                 unsigned* words) {
  extern __shared__ uint4 unused[];
  const uint4* begin = data + blockIdx.x * per_block;
  const size_t stride = blockDim.x;
  const size_t l2_chunks = kL2Bytes / 16;
  uint32_t x = 0;
  size_t l2_index = threadIdx.x;
  for (size_t i = threadIdx.x; i < per_block; i += kLoads * stride) {
    uint4 v[kLoads];
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
      v[u] = i + u * stride < per_block ? __ldcs(begin + i + u * stride) : make_uint4(0, 0, 0, 0);
    }
    uint4 a[kL2Ratio * kLoads + 1];
#pragma unroll
    for (int r = 0; r < kL2Ratio * kLoads; ++r) {
      a[r] = __ldcg(l2 + l2_index);
      l2_index = l2_index + stride < l2_chunks ? l2_index + stride : l2_index + stride - l2_chunks;
    }
#pragma unroll
    for (int r = 0; r < kL2Ratio * kLoads; ++r) x ^= Xor4(a[r]);
#pragma unroll
    for (int u = 0; u < kLoads; ++u) x ^= Xor4(v[u]);
  }
  if (x == 0x12345678u) unused[0] = make_uint4(x, 0, 0, 0);
  StoreBlockXor(x, words);
}

__device__ __forceinline__ void IssueBulk(uint32_t destination, const void* source, uint32_t bytes,
                                          uint32_t barrier) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::
          "r"(destination),
      "l"(source), "r"(bytes), "r"(barrier)
      : "memory");
}

// Warp 0 streams `copies` stages of `stage_bytes` through a ring of `stages` slots. A stage is
// stage_bytes / segment_bytes bulk copies of segment_bytes each, `pitch` bytes apart in global
// memory (contiguous when pitch == segment_bytes): `splits` blocks share a region and block b
// takes segment b % splits of every pitch, as a GEMM's k-split blocks take their slice of each
// weight row. With l2_bytes > 0 each stage also copies that many bytes of the L2-resident buffer
// (a GEMM's activation tile beside its weight tile).
__global__ void BulkIntakeKernel(const char* data, int copies, int stage_bytes, int stages,
                                 int segment_bytes, int splits, const char* l2, int l2_bytes,
                                 unsigned* words) {
  extern __shared__ __align__(128) unsigned char ring[];
  __shared__ __align__(8) uint64_t barriers[16];
  const size_t pitch = static_cast<size_t>(segment_bytes) * splits;
  const int segments = stage_bytes / segment_bytes;
  const size_t block_bytes = static_cast<size_t>(copies) * stage_bytes;
  const char* begin = data + blockIdx.x / splits * block_bytes * splits +
                      static_cast<size_t>(blockIdx.x % splits) * segment_bytes;
  const int slot_bytes = stage_bytes + l2_bytes;
  uint32_t x = 0;
  const int lane = threadIdx.x % 32;
  auto issue = [&](int copy, int slot) {  // by the whole warp, lane 0 arming the barrier
    const uint32_t barrier = SharedAddress(barriers + slot);
    if (lane == 0) {
      asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(barrier),
                   "r"(slot_bytes)
                   : "memory");
    }
    const uint32_t destination = SharedAddress(ring + slot * slot_bytes);
    for (int s = lane; s < segments; s += 32) {
      IssueBulk(destination + s * segment_bytes,
                begin + (static_cast<size_t>(copy) * segments + s) * pitch, segment_bytes, barrier);
    }
    if (l2_bytes > 0 && lane == 0) {
      IssueBulk(destination + stage_bytes, l2 + static_cast<size_t>(copy) * l2_bytes % kL2Bytes,
                l2_bytes, barrier);
    }
  };
  if (threadIdx.x < 32) {
    if (lane == 0) {
      for (int s = 0; s < stages; ++s) {
        BarrierInit(SharedAddress(barriers + s), 1);
      }
      asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncwarp();
    for (int c = 0; c < stages && c < copies; ++c) issue(c, c);
    for (int c = 0; c < copies; ++c) {
      const int s = c % stages;
      if (lane == 0) BarrierWait(SharedAddress(barriers + s), (c / stages) % 2);
      __syncwarp();
      x ^= reinterpret_cast<const uint32_t*>(ring + s * slot_bytes)[0];
      if (c + stages < copies) issue(c + stages, s);
    }
  }
  StoreBlockXor(x, words);
}

}  // namespace

void BenchSmIntake(cudaStream_t stream, int sms, std::vector<Result>& results) {
  char* data = DeviceAlloc<char>(kStreamBytes);
  uint4* l2 = DeviceAlloc<uint4>(kL2Bytes / 16);
  unsigned* words = DeviceAlloc<unsigned>(1024 * 32);
  BENCH_CHECK(cudaMemset(data, 1, kStreamBytes));
  BENCH_CHECK(cudaMemset(l2, 2, kL2Bytes));
  BENCH_CHECK(cudaMemset(words, 0, 1024 * 32 * sizeof(unsigned)));
  using LoadKernel = void (*)(const uint4*, size_t, const uint4*, unsigned*);
  auto load_kernel = [](int loads, int l2_ratio) -> LoadKernel {
    if (loads == 4) return LoadIntakeKernel<4, 0>;
    if (l2_ratio == 1) return LoadIntakeKernel<8, 1>;
    if (l2_ratio == 2) return LoadIntakeKernel<8, 2>;
    return LoadIntakeKernel<8, 0>;
  };
  for (const LoadKernel kernel :
       {load_kernel(4, 0), load_kernel(8, 0), load_kernel(8, 1), load_kernel(8, 2)}) {
    BENCH_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     kOneBlockPerSmBytes));
  }
  BENCH_CHECK(cudaFuncSetAttribute(BulkIntakeKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   200 * 1024));

  std::printf("\n%-44s %6s %10s %10s\n", "intake, one block per SM", "blocks", "GB/s", "GB/s / SM");
  auto report = [&](const std::string& shape, int blocks, double ms, size_t bytes,
                    const std::string& note) {
    const double gbytes_per_s = bytes / (ms * 1e-3) / 1e9;
    std::printf("%-44s %6d %10.1f %10.2f\n", shape.c_str(), blocks, gbytes_per_s,
                gbytes_per_s / blocks);
    results.push_back(Result{"intake", shape + ", " + std::to_string(blocks) + " blocks", ms, 0,
                             gbytes_per_s, note});
  };
  struct LoadConfig {
    int threads;
    int loads;
    int l2_ratio;
  };
  struct BulkConfig {
    int stages;
    int stage_kb;
    int segment_bytes;  // 0: the whole stage
    int splits;
    int l2_kb;
  };
  const LoadConfig load_configs[] = {
      {256, 4, 0}, {512, 8, 0}, {1024, 8, 0}, {512, 8, 1}, {512, 8, 2}};
  const BulkConfig bulk_configs[] = {{4, 16, 0, 1, 0},    {8, 16, 0, 1, 0},    {4, 48, 0, 1, 0},
                                     {4, 16, 1024, 4, 0}, {8, 16, 1024, 4, 0}, {8, 16, 256, 16, 0},
                                     {8, 16, 128, 32, 0}, {8, 16, 0, 1, 8},    {6, 16, 0, 1, 16},
                                     {6, 16, 128, 32, 8}};
  struct TensorConfig {
    int tile_rows;
    int box_rows;
    int k_boxes;
    int stages;
    bool with_x;
  };
  const TensorConfig tensor_configs[] = {{128, 128, 1, 8, false}, {128, 32, 1, 8, false},
                                         {32, 32, 4, 8, false},   {256, 256, 1, 4, false},
                                         {128, 128, 1, 8, true},  {64, 64, 2, 8, false}};
  CUtensorMap x_map;
  if (!EncodeBf16Map(&x_map, l2, 64, 2048, 64)) {
    std::printf("no cuTensorMapEncodeTiled: tensor-map rows skipped\n");
  }
  for (const int blocks : {32, 64, 80, 100, sms}) {
    const size_t per_block = kStreamBytes / blocks / 65536 * 65536;  // whole 64 KB pieces
    for (const LoadConfig& c : load_configs) {
      const auto* chunks = reinterpret_cast<const uint4*>(data);
      const LoadKernel kernel = load_kernel(c.loads, c.l2_ratio);
      const double ms = MedianMs(stream, 2, 9, [&](int) {
        kernel<<<blocks, c.threads, kOneBlockPerSmBytes, stream>>>(chunks, per_block / 16, l2,
                                                                   words);
      });
      BENCH_CHECK(cudaGetLastError());
      report("loads " + std::to_string(c.threads) + " thr x " + std::to_string(c.loads) +
                 (c.l2_ratio ? " + L2 x" + std::to_string(c.l2_ratio) : ""),
             blocks, ms, per_block * blocks,
             std::to_string(c.threads * c.loads * 16 / 1024) + " KB in flight per SM");
    }
    for (const BulkConfig& c : bulk_configs) {
      if (blocks < c.splits) continue;
      const int stage_bytes = c.stage_kb * 1024;
      const int segment_bytes = c.segment_bytes ? c.segment_bytes : stage_bytes;
      const int copies = static_cast<int>(per_block / stage_bytes);
      const int shared_bytes = c.stages * (stage_bytes + c.l2_kb * 1024);
      const double ms = MedianMs(stream, 2, 9, [&](int) {
        BulkIntakeKernel<<<blocks / c.splits * c.splits, 256, shared_bytes, stream>>>(
            data, copies, stage_bytes, c.stages, segment_bytes, c.splits,
            reinterpret_cast<const char*>(l2), c.l2_kb * 1024, words);
      });
      BENCH_CHECK(cudaGetLastError());
      std::string name =
          "bulk " + std::to_string(c.stages) + " x " + std::to_string(c.stage_kb) + " KB";
      if (c.segment_bytes) {
        name += " in " + std::to_string(c.segment_bytes) + " B of every " +
                std::to_string(c.segment_bytes * c.splits) + " B";
      }
      if (c.l2_kb) name += " + " + std::to_string(c.l2_kb) + " KB L2";
      report(name, blocks / c.splits * c.splits, ms,
             static_cast<size_t>(copies) * stage_bytes * (blocks / c.splits * c.splits),
             std::to_string(c.stages * c.stage_kb) + " KB of DRAM bytes in flight per SM");
    }
    for (const TensorConfig& c : tensor_configs) {
      CUtensorMap w_map;
      const uint64_t rows = kStreamBytes / 4096;
      if (!EncodeBf16Map(&w_map, data, rows, 2048, c.box_rows)) continue;
      const int tiles = static_cast<int>(rows / c.tile_rows);
      const int stage_bytes = c.tile_rows * 128 * c.k_boxes;
      const int shared_bytes = 1024 + c.stages * (stage_bytes + (c.with_x ? 8192 : 0));
      BENCH_CHECK(cudaFuncSetAttribute(TensorStreamKernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, shared_bytes));
      const double ms = MedianMs(stream, 2, 9, [&](int) {
        TensorStreamKernel<<<blocks, 128, shared_bytes, stream>>>(
            w_map, x_map, 0, tiles, c.tile_rows, c.box_rows, c.k_boxes, c.stages, c.with_x, words);
      });
      BENCH_CHECK(cudaGetLastError());
      report("tensor " + std::to_string(c.stages) + " x (" + std::to_string(c.tile_rows) +
                 " rows x " + std::to_string(128 * c.k_boxes) + " B, boxes of " +
                 std::to_string(c.box_rows) + ")" + (c.with_x ? " + 8 KB L2" : ""),
             blocks, ms, static_cast<size_t>(tiles) * c.tile_rows * 4096,
             std::to_string(c.stages * stage_bytes / 1024) + " KB of DRAM bytes in flight per SM");
    }
  }
  cudaFree(words);
  cudaFree(l2);
  cudaFree(data);
}

}  // namespace llm::bench
