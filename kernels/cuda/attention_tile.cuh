// One warp's share of flash attention: 16 * kMTiles query rows against one K/V tile of kTileN
// positions in shared memory, with the online softmax (FlashAttention-2, Dao 2023):
//   S = Q K^T * scale                                  (mma.sync, Q and K read with ldmatrix)
//   m' = max(m, rowmax(S));  P = exp(S - m');  l' = l * exp(m - m') + rowsum(P)
//   O' = O * exp(m - m') + P V                         (P stays in registers as the A operand)
// Exponentials are taken base 2 (scores pre-multiplied by scale * log2(e)); m and l are per row,
// l is kept as each lane's partial sum and reduced across the 4 lanes of a row only in Finish().
// Used by flash_prefill.cuh (a thread block of warps over one Q tile, shared K/V tiles) and
// flash_decode.cuh (warps over different K/V tiles of one split, merged at the end).
#pragma once

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/mma.cuh"

namespace llm::cuda {

// kLazyRescale: skip O's rescale when no row of the warp changed its running max (warp vote).
// 2^x with one MUFU.EX2 (flush-to-zero): x <= 0 here, so results below 2^-126 only lose what
// would round away against the row sum anyway; 2^-inf = 0.
__device__ __forceinline__ float FastExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <int kHeadDim, int kTileN, int kMTiles, bool kLazyRescale = true>
struct WarpFlashState {
  static_assert(kHeadDim % 64 == 0, "head_dim must be a multiple of 64 (swizzled 16-byte chunks)");
  static_assert(kTileN % 16 == 0, "K/V tile must be a multiple of 16 positions");
  static constexpr int kDimSteps = kHeadDim / 16;  // k-steps of Q K^T
  static constexpr int kScoreTiles = kTileN / 8;   // n8 tiles of S per 16 rows
  static constexpr int kOutTiles = kHeadDim / 8;   // n8 tiles of O per 16 rows

  float o[kMTiles][kOutTiles][4];
  float row_max[kMTiles][2];  // [m-tile][row g or g + 8], log2 units
  float row_sum[kMTiles][2];

  __device__ __forceinline__ void Init() {
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
      for (int j = 0; j < kOutTiles; ++j)
        o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.f;
      row_max[mt][0] = row_max[mt][1] = -INFINITY;
      row_sum[mt][0] = row_sum[mt][1] = 0.f;
    }
  }

  // smem_q/smem_k/smem_v are swizzled tiles of kHeadDim-element rows; the warp's query rows start
  // at row q_row0 of smem_q and the K/V tile at row kv_row0 of smem_k/smem_v. is_valid(mt, half,
  // column) says whether query row (mt, g + 8 * half) may attend K/V column `column` of the tile;
  // it is only consulted when kMasked.
  template <bool kMasked, typename ValidFn>
  __device__ __forceinline__ void Step(const __nv_bfloat16* smem_q, int q_row0,
                                       const __nv_bfloat16* smem_k, const __nv_bfloat16* smem_v,
                                       int kv_row0, float scale_log2, ValidFn&& is_valid) {
    const int lane = threadIdx.x & 31;
    float s[kMTiles][kScoreTiles][4];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int j = 0; j < kScoreTiles; ++j)
        s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;

        // S = Q K^T. A fragments: rows lane % 16, columns +8 for lanes 16..31. B fragments from K
        // rows (n) with the two 8-column halves of the k-step in matrices 0/1 and the next 8 rows
        // in 2/3.
#pragma unroll
    for (int ks = 0; ks < kDimSteps; ++ks) {
      uint32_t a[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
        LdMatrixX4(a[mt], smem_q + SwizzledOffset<kHeadDim>(q_row0 + mt * 16 + (lane & 15),
                                                            ks * 16 + (lane >> 4) * 8));
#pragma unroll
      for (int np = 0; np < kScoreTiles / 2; ++np) {
        uint32_t b[4];
        LdMatrixX4(
            b, smem_k + SwizzledOffset<kHeadDim>(kv_row0 + np * 16 + (lane & 7) + (lane >> 4) * 8,
                                                 ks * 16 + ((lane >> 3) & 1) * 8));
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          MmaBf16(s[mt][2 * np], a[mt], b[0], b[1]);
          MmaBf16(s[mt][2 * np + 1], a[mt], b[2], b[3]);
        }
      }
    }

    // Online softmax, row by row (each lane holds two rows: g and g + 8). Maxima are taken on the
    // raw scores (scale > 0 keeps the order) and the scale is folded into the exponent's FMA: p =
    // 2^(s * scale_log2 - m), m kept in log2 units. Max and sum run as two independent chains
    // (even/odd columns) to halve the dependent-latency stalls that dominate with 2
    // warps/scheduler.
    const int quad_lane = lane & 3;
    float correction[kMTiles][2];
    bool max_moved = false;
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float max_even = -INFINITY, max_odd = -INFINITY;
#pragma unroll
        for (int j = 0; j < kScoreTiles; ++j) {
          if constexpr (kMasked) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              if (!is_valid(mt, half, j * 8 + quad_lane * 2 + e))
                s[mt][j][half * 2 + e] = -INFINITY;
            }
          }
          max_even = fmaxf(max_even, s[mt][j][half * 2]);
          max_odd = fmaxf(max_odd, s[mt][j][half * 2 + 1]);
        }
        float tile_max = fmaxf(max_even, max_odd);
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
        const float new_max = fmaxf(row_max[mt][half], tile_max * scale_log2);
        // A row with nothing valid yet keeps m = -inf; subtracting 0 instead keeps 2^x at 0, not
        // NaN.
        const float offset = new_max == -INFINITY ? 0.f : new_max;
        correction[mt][half] = FastExp2(row_max[mt][half] - offset);
        max_moved |= new_max != row_max[mt][half];
        row_max[mt][half] = new_max;
        float sum_even = 0.f, sum_odd = 0.f;
#pragma unroll
        for (int j = 0; j < kScoreTiles; ++j) {
          const float p0 = FastExp2(fmaf(s[mt][j][half * 2], scale_log2, -offset));
          const float p1 = FastExp2(fmaf(s[mt][j][half * 2 + 1], scale_log2, -offset));
          s[mt][j][half * 2] = p0;
          s[mt][j][half * 2 + 1] = p1;
          sum_even += p0;
          sum_odd += p1;
        }
        row_sum[mt][half] = row_sum[mt][half] * correction[mt][half] + (sum_even + sum_odd);
      }
    }
    // Rescaling O costs a multiply per accumulator; once the running maxima settle (most tiles of a
    // long row) no row of the warp moves and the whole warp skips it.
    if (!kLazyRescale || __any_sync(0xffffffffu, max_moved)) {
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int j = 0; j < kOutTiles; ++j) {
          o[mt][j][0] *= correction[mt][0];
          o[mt][j][1] *= correction[mt][0];
          o[mt][j][2] *= correction[mt][1];
          o[mt][j][3] *= correction[mt][1];
        }
    }

    // O += P V. The accumulator layout of two adjacent n8 tiles of S is the A layout of one k16
    // step; V (rows = positions) is read transposed so each B fragment holds two positions of one
    // column.
#pragma unroll
    for (int kk = 0; kk < kTileN / 16; ++kk) {
      uint32_t p[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        p[mt][0] = PackBf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        p[mt][1] = PackBf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        p[mt][2] = PackBf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        p[mt][3] = PackBf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < kOutTiles / 2; ++dp) {
        uint32_t b[4];
        LdMatrixX4Trans(b, smem_v + SwizzledOffset<kHeadDim>(
                                        kv_row0 + kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8,
                                        dp * 16 + (lane >> 4) * 8));
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          MmaBf16(o[mt][2 * dp], p[mt], b[0], b[1]);
          MmaBf16(o[mt][2 * dp + 1], p[mt], b[2], b[3]);
        }
      }
    }
  }

  // Reduces l across the 4 lanes that share a row. Call once, after the last Step().
  __device__ __forceinline__ void Finish() {
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float sum = row_sum[mt][half];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        row_sum[mt][half] = sum;
      }
  }

  // Calls emit(local_row, column, value0, value1) for the two adjacent output columns each lane
  // holds, with local_row in [0, 16 * kMTiles); values are O / l (0 for a row that attended to
  // nothing).
  template <typename EmitFn>
  __device__ __forceinline__ void ForEachOutput(EmitFn&& emit) const {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const float inverse = row_sum[mt][half] > 0.f ? 1.f / row_sum[mt][half] : 0.f;
        const int row = mt * 16 + (lane >> 2) + half * 8;
#pragma unroll
        for (int j = 0; j < kOutTiles; ++j)
          emit(row, j * 8 + (lane & 3) * 2, o[mt][j][half * 2] * inverse,
               o[mt][j][half * 2 + 1] * inverse);
      }
  }
};

}  // namespace llm::cuda
