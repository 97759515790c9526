// Hopper (sm_90a) building blocks of the wgmma flash prefill (flash_prefill_wgmma.cuh):
// shared-memory matrix descriptors for 128-byte-swizzled tiles, wgmma.mma_async (bf16 in, fp32
// accumulate) in the four shapes the kernel issues, mbarriers, the async-proxy fence and
// setmaxnreg.
//
// Tiles. A shared-memory tile of R rows x 64 bf16 (128 bytes a row) is one column of 128-byte
// swizzle atoms: 16-byte chunk c of row r is stored at chunk position c ^ (r % 8) (the same XOR as
// mma.cuh's SwizzledOffset), and the tile starts on a 1024-byte boundary, because the hardware
// applies the XOR to address bits 4-6 from bits 7-9. Wider rows (head_dim 128) are two such
// column tiles one after the other ([column / 64][row][64]). Read as a wgmma operand:
//   K-major (Q as A, K as B of S = Q K^T: rows = M or N, contiguous along the reduction): the
//   stride between 8-row groups (SBO) is 1024 bytes; a k16 step inside an atom is a 32-byte
//   advance of the start address; the leading offset is unused with swizzling (encoded 1).
//   MN-major (V as B of O = P V, rows = the reduction, contiguous along N; transpose bit set): SBO
//   is again the stride between 8-row groups (1024 bytes) and the leading offset (LBO) is the
//   stride between 64-column atoms along N (the size of one column tile).
// Fragment layouts (g = lane / 4, t = lane % 4, warp w of the warpgroup owns rows 16w..16w+15):
//   accumulator of m64nN: d[4j + 0..1] = (row g, columns 8j + 2t, +1), d[4j + 2..3] = (row g + 8,
//   same columns), j < N / 8 -- per warp the mma.sync m16n8 C layout repeated along N;
//   A from registers (m64k16, bf16 pairs): a0 = (g, 2t..), a1 = (g + 8, 2t..), a2 = (g, 2t + 8..),
//   a3 = (g + 8, 2t + 8..) -- the mma.sync A layout, so two n8 blocks of a score accumulator are
//   one k16 A fragment after conversion to bf16.
#pragma once

#include <cstdint>

namespace llm::cuda::wgmma {

// 64-bit wgmma descriptor of a 128-byte-swizzled tile starting at shared address `start` (bits
// 0-13: start >> 4; 16-29: leading byte offset >> 4; 32-45: stride byte offset >> 4; 62-63: 1 =
// 128-byte swizzle; base offset 0 since atoms start on 1024-byte boundaries).
__device__ __forceinline__ uint64_t SwizzledTileDescriptor(uint32_t start, uint32_t leading_bytes,
                                                           uint32_t stride_bytes) {
  return static_cast<uint64_t>((start & 0x3FFFF) >> 4) |
         static_cast<uint64_t>((leading_bytes >> 4) & 0x3FFF) << 16 |
         static_cast<uint64_t>((stride_bytes >> 4) & 0x3FFF) << 32 | uint64_t{1} << 62;
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a tile of kRows rows stored as 64-column
// swizzled column tiles (see the header).
template <int kRows>
__device__ __forceinline__ uint32_t SwizzledChunkOffset(int row, int chunk) {
  return static_cast<uint32_t>((chunk >> 3) * kRows * 128 + row * 128 +
                               (((chunk & 7) ^ (row & 7)) << 4));
}

__device__ __forceinline__ void Fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void Commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void Wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}

// Pins accumulator registers at this point of the program: the compiler sees the wgmma's asm as
// having produced its outputs at issue, so without this it could move their reads above the wait
// (or writes of the rescale below the issue).
template <int kCount>
__device__ __forceinline__ void FenceRegisters(float (&registers)[kCount]) {
#pragma unroll
  for (int i = 0; i < kCount; ++i) asm volatile("" : "+f"(registers[i])::"memory");
}

#define LLM_WGMMA_F8(d, i)                                                                    \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
      "+f"(d[i + 6]), "+f"(d[i + 7])
#define LLM_WGMMA_F32(d) \
  LLM_WGMMA_F8(d, 0), LLM_WGMMA_F8(d, 8), LLM_WGMMA_F8(d, 16), LLM_WGMMA_F8(d, 24)
#define LLM_WGMMA_F64(d)                                                           \
  LLM_WGMMA_F32(d), LLM_WGMMA_F8(d, 32), LLM_WGMMA_F8(d, 40), LLM_WGMMA_F8(d, 48), \
      LLM_WGMMA_F8(d, 56)

// d (64 x 128, fp32) = (accumulate ? d : 0) + A (64 x 16, shared, K-major) * B (16 x 128, shared,
// K-major): the score tile S = Q K^T, one k16 step.
__device__ __forceinline__ void MmaM64N128SharedShared(float (&d)[64], uint64_t a_descriptor,
                                                       uint64_t b_descriptor, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "
      "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "
      "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "
      "%56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : LLM_WGMMA_F64(d)
      : "l"(a_descriptor), "l"(b_descriptor), "r"(accumulate));
}

// d (64 x 64, fp32) = (accumulate ? d : 0) + A (64 x 16, shared, K-major) * B (16 x 64, shared,
// K-major): the first 64 columns of S = Q K^T when the other 64 are masked anyway.
__device__ __forceinline__ void MmaM64N64SharedShared(float (&d)[32], uint64_t a_descriptor,
                                                      uint64_t b_descriptor, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "
      "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : LLM_WGMMA_F32(d)
      : "l"(a_descriptor), "l"(b_descriptor), "r"(accumulate));
}

// d (64 x 128, fp32) += A (64 x 16, registers) * B (16 x 128, shared, MN-major): O += P V, one
// k16 step, head_dim 128.
__device__ __forceinline__ void MmaM64N128RegisterShared(float (&d)[64], const uint32_t (&a)[4],
                                                         uint64_t b_descriptor) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "
      "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "
      "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "
      "%56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : LLM_WGMMA_F64(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_descriptor), "r"(1));
}

// d (64 x 64, fp32) += A (64 x 16, registers) * B (16 x 64, shared, MN-major): O += P V, one k16
// step, head_dim 64.
__device__ __forceinline__ void MmaM64N64RegisterShared(float (&d)[32], const uint32_t (&a)[4],
                                                        uint64_t b_descriptor) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "
      "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, "
      "1, 1, 1;\n}\n"
      : LLM_WGMMA_F32(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_descriptor), "r"(1));
}

#undef LLM_WGMMA_F64
#undef LLM_WGMMA_F32
#undef LLM_WGMMA_F8

// O += P V for either head_dim (the accumulator's size picks the shape).
__device__ __forceinline__ void MmaRegisterShared(float (&d)[64], const uint32_t (&a)[4],
                                                  uint64_t b_descriptor) {
  MmaM64N128RegisterShared(d, a, b_descriptor);
}
__device__ __forceinline__ void MmaRegisterShared(float (&d)[32], const uint32_t (&a)[4],
                                                  uint64_t b_descriptor) {
  MmaM64N64RegisterShared(d, a, b_descriptor);
}

// --- mbarriers (shared::cta, 64-bit), phases tracked by the caller's parity ---
__device__ __forceinline__ void BarrierInit(uint32_t barrier, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(barrier), "r"(arrivals)
               : "memory");
}
__device__ __forceinline__ void BarrierArrive(uint32_t barrier) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(barrier) : "memory");
}
// Blocks until the phase with this parity has completed.
__device__ __forceinline__ void BarrierWait(uint32_t barrier, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT_LOOP:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_LOOP;\n}\n" ::"r"(barrier),
      "r"(parity)
      : "memory");
}

// Orders this thread's earlier generic-proxy writes to shared memory (cp.async results included,
// once waited for) before later async-proxy reads (wgmma operands).
__device__ __forceinline__ void FenceAsyncProxy() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// Synchronises the 128 threads of one warpgroup on named barrier `id` (0 is __syncthreads').
__device__ __forceinline__ void WarpgroupBarrier(int id) {
  asm volatile("bar.sync %0, 128;\n" ::"r"(id) : "memory");
}

// Register budget per thread of the calling warpgroup (multiple of 8, 24..256).
template <int kRegisters>
__device__ __forceinline__ void ReleaseRegisters() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}
template <int kRegisters>
__device__ __forceinline__ void ClaimRegisters() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}

}  // namespace llm::cuda::wgmma
