// Warp-level tensor-core building blocks shared by the attention kernels: cp.async copies into
// shared memory, the XOR swizzle of shared-memory tiles, ldmatrix, and mma.sync m16n8k16 (bf16 in,
// fp32 accumulate).
//
// Fragment layouts of mma.sync.m16n8k16 (g = lane / 4, t = lane % 4), which the kernels rely on:
//   A (16x16, row-major) a0: (g, 2t..2t+1)  a1: (g+8, 2t..)  a2: (g, 2t+8..)  a3: (g+8, 2t+8..)
//   B (16x8, k x n)      b0: (k=2t..2t+1, n=g)               b1: (k=2t+8.., n=g)
//   C (16x8, fp32)       c0,c1: (g, 2t..2t+1)                c2,c3: (g+8, 2t..2t+1)
// ldmatrix.x4 loads four 8x8 bf16 matrices; lane i supplies the address of row i % 8 of matrix
// i / 8 and receives, in register j, elements (lane / 4, 2 * (lane % 4) ..+1) of matrix j (with
// .trans: elements (2 * (lane % 4) ..+1, lane / 4), i.e. the transpose).
//
// Shared-memory tiles hold rows of kRowElements bf16 (a head: 64 or 128) as 16-byte chunks; chunk c
// of row r is stored at chunk position c ^ (r % 8). The 8 rows an ldmatrix phase reads then fall
// into 8 different bank groups instead of one (no bank conflicts); cp.async writes use the same
// mapping.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace llm::cuda {

template <int kRowElements>
__device__ __forceinline__ int SwizzledOffset(int row, int column) {
  static_assert(kRowElements % 64 == 0, "swizzle needs at least 8 chunks of 8 bf16 per row");
  const int chunk = column >> 3;
  return row * kRowElements + (((chunk ^ (row & 7))) << 3) + (column & 7);
}

__device__ __forceinline__ uint32_t SharedAddress(const void* pointer) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}

// 16-byte global -> shared copy; when `valid` is false nothing is read and the destination is
// zeroed.
__device__ __forceinline__ void CpAsync16(void* shared_destination, const void* global_source,
                                          bool valid) {
  const int source_bytes = valid ? 16 : 0;
  asm volatile(
      "cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SharedAddress(shared_destination)),
      "l"(global_source), "r"(source_bytes));
}

__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int kPendingGroups>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPendingGroups));
}

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* shared_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(shared_row)));
}

__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], const void* shared_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(shared_row)));
}

// d += a * b for one 16x8x16 tile.
__device__ __forceinline__ void MmaBf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t PackBf16(float low, float high) {
  const __nv_bfloat162 packed = __floats2bfloat162_rn(low, high);
  return *reinterpret_cast<const uint32_t*>(&packed);
}

}  // namespace llm::cuda
