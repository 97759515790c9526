// A TMA streaming kernel shared by the intake and boundary sections (bench_intake.cu,
// bench_boundary.cu): blocks walk row tiles of a [rows][2048] bf16 matrix along k through a ring of
// mbarrier-guarded shared-memory slots, as a TMA GEMM streams its weights, without the arithmetic.
// Internal linkage: each benchmark file gets its own copy.
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/flash_prefill_wgmma_ops.cuh"  // mbarrier helpers
#include "kernels/cuda/mma.cuh"                      // SharedAddress

namespace llm::bench {
namespace {

using cuda::SharedAddress;
using cuda::wgmma::BarrierInit;
using cuda::wgmma::BarrierWait;

// The block's XOR of x into one word (so that the compiler keeps every load).
__device__ void StoreBlockXor(uint32_t x, unsigned* words) {
  for (int mask = 16; mask > 0; mask /= 2) x ^= __shfl_xor_sync(0xffffffffu, x, mask);
  if (threadIdx.x % 32 == 0) atomicXor(words + blockIdx.x % 1024 * 32, x);
}

// The weights as a [rows][2048] bf16 matrix read through a tensor map from row first_row on in
// boxes of 64 columns (128 bytes, 128-byte swizzled) x box_rows rows, as a TMA GEMM reads its
// weight tiles: block b takes row tiles of tile_rows rows (b, b + G, ...) and walks each along k, a
// stage being tile_rows / box_rows boxes of one 64-column step (k_boxes = 1) or box_rows rows over
// k_boxes consecutive 64-column steps; optionally with an 8 KB box of a [64][2048] L2-resident
// matrix per stage (the activations' tile). Lane 0 of warp 0 drives the ring.
__global__ void TensorStreamKernel(const __grid_constant__ CUtensorMap w_map,
                                   const __grid_constant__ CUtensorMap x_map, int first_row,
                                   int tiles, int tile_rows, int box_rows, int k_boxes, int stages,
                                   bool with_x, unsigned* words) {
  extern __shared__ __align__(1024) unsigned char tensor_ring[];
  __shared__ __align__(8) uint64_t barriers[16];
  constexpr int kColumns = 2048;
  const int box_bytes = box_rows * 128;
  const int boxes = tile_rows / box_rows * k_boxes;
  const int stage_bytes = boxes * box_bytes;
  const int slot_bytes = stage_bytes + (with_x ? 8192 : 0);
  const int k_steps = kColumns / 64 / k_boxes;
  const int my_tiles = (tiles - static_cast<int>(blockIdx.x) + gridDim.x - 1) / gridDim.x;
  const int copies = my_tiles * k_steps;
  const uint32_t ring_base = (SharedAddress(tensor_ring) + 1023u) & ~1023u;
  uint32_t x = 0;
  auto issue = [&](int copy, int slot) {
    const uint32_t barrier = SharedAddress(barriers + slot);
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(barrier),
                 "r"(slot_bytes)
                 : "memory");
    const int tile = static_cast<int>(blockIdx.x) + copy / k_steps * static_cast<int>(gridDim.x);
    const int k_step = copy % k_steps;
    const uint32_t destination = ring_base + slot * slot_bytes;
    for (int b = 0; b < boxes; ++b) {
      const int column = (k_step * k_boxes + b % k_boxes) * 64;
      const int row = first_row + tile * tile_rows + b / k_boxes * box_rows;
      asm volatile(
          "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, "
          "{%2, %3}], [%4];\n" ::"r"(destination + b * box_bytes),
          "l"(reinterpret_cast<uint64_t>(&w_map)), "r"(column), "r"(row), "r"(barrier)
          : "memory");
    }
    if (with_x) {
      asm volatile(
          "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, "
          "{%2, %3}], [%4];\n" ::"r"(destination + stage_bytes),
          "l"(reinterpret_cast<uint64_t>(&x_map)), "r"(k_step * k_boxes * 64), "r"(0), "r"(barrier)
          : "memory");
    }
  };
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      BarrierInit(SharedAddress(barriers + s), 1);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    for (int c = 0; c < stages && c < copies; ++c) issue(c, c);
    for (int c = 0; c < copies; ++c) {
      const int s = c % stages;
      BarrierWait(SharedAddress(barriers + s), (c / stages) % 2);
      uint32_t word;
      asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(word) : "r"(ring_base + s * slot_bytes));
      x ^= word;
      if (c + stages < copies) issue(c + stages, s);
    }
  }
  StoreBlockXor(x, words);
}

// cuTensorMapEncodeTiled from the driver through the runtime (no link-time libcuda).
bool EncodeBf16Map(CUtensorMap* map, const void* base, uint64_t rows, uint64_t columns,
                   uint32_t box_rows) {
  static const auto encode = [] {
    void* pointer = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &pointer, 12000,
                                         cudaEnableDefault, &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      pointer = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(pointer);
  }();
  if (encode == nullptr) return false;
  const cuuint64_t dims[2] = {columns, rows};
  const cuuint64_t strides[1] = {columns * 2};
  const cuuint32_t box[2] = {64, box_rows};
  const cuuint32_t element_strides[2] = {1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(base), dims, strides,
                box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace
}  // namespace llm::bench
