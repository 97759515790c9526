// Flash prefill over the paged KV cache for Hopper (sm_90a), FlashAttention-3 style: wgmma on
// warpgroups, a producer warpgroup feeding two consumer warpgroups through an mbarrier pipeline.
// Same problem and semantics as flash_prefill.cuh (the mma.sync kernel, kept as the fallback):
// ragged batch, absolute positions, causal by position (kv_pos <= q_pos, kv_pos < kv_len), GQA
// rows row = token_in_sequence * group + head_in_group, mixed_batch skips flash decode's share.
//
// A thread block owns (sequence, kv head, 128 query rows) and has three warpgroups:
//   producer (warpgroup 0, 40 registers after setmaxnreg): gathers K and V tiles of kTileN = 128
//     positions from the pages into a kStages-deep ring of 128-byte-swizzled shared tiles with
//     cp.async. Thread p owns tile row p (position tile * 128 + p) and walks its (block-table
//     index, slot) pair from tile to tile by adding 128 positions (no division in the loop, as in
//     flash_prefill.cuh); the warp copies two (head_dim 128) or four (64) rows per instruction,
//     16 bytes a lane, taking each row's address from its owner by a shuffle, so the loads are
//     coalesced. After a tile's copies land (cp.async.wait_group) each producer thread fences the
//     async proxy and arrives on the tile's "K full" / "V full" barrier (separately, so S = Q K^T
//     starts while V still loads), then waits on the stage's "empty" barrier before reusing it.
//   consumers (warpgroups 1 and 2, 232 registers): 64 query rows each, Q in shared memory (loaded
//     once by the consumer itself). Per K/V tile: S = Q K^T by wgmma m64n128k16 (both operands in
//     shared memory, K-major), the online softmax on the accumulator registers (scale folded into
//     the exp2 FMA, causal mask only on tiles that reach past the warpgroup's first position, O
//     rescaled only when some row's max moved), P converted to bf16 in registers as the A operand
//     of O += P V (wgmma m64nDk16, V MN-major in shared memory through the transpose bit); then
//     each consumer warp arrives on the stage's "empty" barrier.
// The two consumers are independent (no block barrier in the loop), so one's softmax overlaps the
// other's matrix products. Grid and order as flash_prefill.cuh: (kv head, sequence, row tile) with
// row tiles reversed, longest first.
//
// Built only for sm_90a (flash_prefill_wgmma_hd{64,128}.cu, an object library with
// CUDA_ARCHITECTURES 90a); any other device pass compiles to a trap, and the dispatch
// (attention_dispatch.cc) launches it only on compute capability 9.0. Reference: the CPU backend's
// PagedAttention; test: tests/kernels/gpu/attention_test.cc (both prefill kernels); benchmark:
// bench/bench_kernels.cu, section prefill.
#pragma once

#include <cuda_bf16.h>

#include "kernels/cuda/attention_params.h"
#include "kernels/cuda/attention_tile.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/flash_prefill_wgmma_ops.cuh"
#include "kernels/cuda/mma.cuh"

namespace llm::cuda {

template <int kHeadDim_, int kStages_>
struct FlashPrefillWgmmaTraits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kStages = kStages_;
  static constexpr int kTileN = 128;  // K/V positions per tile = producer threads (one row each)
  static constexpr int kConsumers = 2;
  static constexpr int kRowsPerConsumer = 64;  // one wgmma M
  static constexpr int kTileM = kConsumers * kRowsPerConsumer;
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kProducerRegisters = 56;
  static constexpr int kConsumerRegisters = 224;      // (65536 - 128 * 56) / 256, rounded down to 8
  static constexpr int kChunksPerRow = kHeadDim / 8;  // 16-byte chunks
  static constexpr int kQBytes = kTileM * kHeadDim * 2;
  static constexpr int kKvTileBytes = kTileN * kHeadDim * 2;
  // Q, then kStages K tiles, then kStages V tiles, each on a 1024-byte boundary (the swizzle
  // atom), plus slack to align the dynamic shared memory base.
  static constexpr int kSharedBytes = kQBytes + 2 * kStages * kKvTileBytes + 1024;
  static_assert(kHeadDim == 64 || kHeadDim == 128, "wgmma flash prefill: head_dim 64 or 128");
  static_assert(kSharedBytes <= 227 * 1024, "wgmma flash prefill: shared memory over 227 KB");
};

template <typename Traits>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    FlashPrefillWgmmaKernel(const __grid_constant__ PagedAttentionParams params) {
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
  __trap();  // launched only on sm_90a devices; other passes carry no wgmma
#elif defined(__CUDA_ARCH__)
  constexpr int D = Traits::kHeadDim;
  constexpr int kTileN = Traits::kTileN;
  constexpr int kTileM = Traits::kTileM;
  constexpr int kStages = Traits::kStages;
  constexpr int kChunks = Traits::kChunksPerRow;
  extern __shared__ __align__(128) unsigned char shared_raw[];
  __shared__ __align__(8) uint64_t barriers[3 * kStages];  // K full, V full, empty per stage

  const int kv_head = blockIdx.x;
  const int seq = blockIdx.y;
  const int group = params.num_q_heads / params.num_kv_heads;
  const int q_begin = params.query_start[seq];
  const int num_rows = (params.query_start[seq + 1] - q_begin) * group;
  const int row0 = (gridDim.z - 1 - blockIdx.z) * kTileM;
  if (row0 >= num_rows) return;
  if (params.mixed_batch && num_rows <= kFlashDecodeMaxRows) return;  // flash decode's share

  const int kv_len = params.kv_lens[seq];
  const int last_row = min(row0 + kTileM, num_rows) - 1;
  const int first_position = params.positions[q_begin + row0 / group];
  const int last_position = params.positions[q_begin + last_row / group];
  const int kv_end = min(kv_len, last_position + 1);
  const int num_kv_tiles = (kv_end + kTileN - 1) / kTileN;

  const uint32_t shared_base = (SharedAddress(shared_raw) + 1023u) & ~1023u;
  unsigned char* const shared_aligned = shared_raw + (shared_base - SharedAddress(shared_raw));
  const uint32_t q_tile = shared_base;
  const uint32_t k_tiles = q_tile + Traits::kQBytes;
  const uint32_t v_tiles = k_tiles + kStages * Traits::kKvTileBytes;
  const uint32_t k_full = SharedAddress(&barriers[0]);
  const uint32_t v_full = SharedAddress(&barriers[kStages]);
  const uint32_t empty = SharedAddress(&barriers[2 * kStages]);
  if (threadIdx.x == 0) {
    for (int stage = 0; stage < kStages; ++stage) {
      wgmma::BarrierInit(k_full + 8 * stage, 128);  // every producer thread arrives
      wgmma::BarrierInit(v_full + 8 * stage, 128);
      wgmma::BarrierInit(empty + 8 * stage, 4 * Traits::kConsumers);  // every consumer warp
    }
  }
  __syncthreads();

  // Warp-uniform role (the shuffle tells the compiler so).
  const int warpgroup = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / 128, 0);
  const int lane = threadIdx.x % 32;

  if (warpgroup == 0) {
    // ---------------------------------------------------------------------------- producer
    wgmma::ReleaseRegisters<Traits::kProducerRegisters>();
    const int thread = threadIdx.x;  // owns row `thread` of every K/V tile
    const int warp_row0 = thread & ~31;
    const kvcache::KvLayout layout = params.layout;
    const int block_size = layout.block_size;
    const int* block_table =
        params.block_tables + static_cast<int64_t>(seq) * params.block_table_stride;
    int cursor_block = thread / block_size;
    int cursor_slot = thread % block_size;
    const int advance_blocks = kTileN / block_size;
    const int advance_slots = kTileN % block_size;
    // Row of this thread's position in the layer's [block][kv_head][slot] rows, or -1 past kv_end.
    auto pool_row = [&](int tile) {
      return tile * kTileN + thread < kv_end
                 ? (block_table[cursor_block] * layout.num_kv_heads + kv_head) * block_size +
                       cursor_slot
                 : -1;
    };
    constexpr int kRowsPerCopy = 32 / kChunks;  // rows a warp copies per instruction
    const int copy_chunk = lane % kChunks;
    // Not unrolled: hoisting every iteration's offsets out of the tile loop would spill the
    // producer's few registers.
    auto copy_tile = [&](const __nv_bfloat16* source_base, uint32_t destination, int my_pool_row) {
#pragma unroll 1
      for (int i = 0; i < kChunks; ++i) {
        const int local_row = i * kRowsPerCopy + lane / kChunks;
        const int source_row = __shfl_sync(0xffffffffu, my_pool_row, local_row);
        const bool valid = source_row >= 0;
        const __nv_bfloat16* source =
            source_base + (valid ? static_cast<int64_t>(source_row) * D + copy_chunk * 8 : 0);
        const uint32_t offset =
            wgmma::SwizzledChunkOffset<kTileN>(warp_row0 + local_row, copy_chunk);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(destination + offset),
                     "l"(source), "r"(valid ? 16 : 0));
      }
      CpAsyncCommit();
    };
    int my_pool_row = num_kv_tiles > 0 ? pool_row(0) : -1;
    for (int tile = 0; tile < num_kv_tiles; ++tile) {
      const int stage = tile % kStages;
      if (tile >= kStages) wgmma::BarrierWait(empty + 8 * stage, ((tile / kStages) + 1) & 1);
      copy_tile(params.k_cache, k_tiles + stage * Traits::kKvTileBytes, my_pool_row);
      copy_tile(params.v_cache, v_tiles + stage * Traits::kKvTileBytes, my_pool_row);
      cursor_slot += advance_slots;
      cursor_block += advance_blocks;
      if (cursor_slot >= block_size) {
        cursor_slot -= block_size;
        ++cursor_block;
      }
      if (tile + 1 < num_kv_tiles) my_pool_row = pool_row(tile + 1);
      // The previous tile (two commit groups older than this one's) has landed: publish it.
      if (tile > 0) {
        const int previous = (tile - 1) % kStages;
        CpAsyncWait<3>();
        wgmma::FenceAsyncProxy();
        wgmma::BarrierArrive(k_full + 8 * previous);
        CpAsyncWait<2>();
        wgmma::FenceAsyncProxy();
        wgmma::BarrierArrive(v_full + 8 * previous);
      }
    }
    if (num_kv_tiles > 0) {
      const int last = (num_kv_tiles - 1) % kStages;
      CpAsyncWait<1>();
      wgmma::FenceAsyncProxy();
      wgmma::BarrierArrive(k_full + 8 * last);
      CpAsyncWait<0>();
      wgmma::FenceAsyncProxy();
      wgmma::BarrierArrive(v_full + 8 * last);
    }
    return;
  }

  // ------------------------------------------------------------------------------ consumers
  wgmma::ClaimRegisters<Traits::kConsumerRegisters>();
  const int consumer = warpgroup - 1;
  const int thread = threadIdx.x % 128;
  const int warp = thread / 32;  // within the warpgroup: rows 16 * warp .. + 15
  const int consumer_row0 = row0 + consumer * Traits::kRowsPerConsumer;

  // Q rows of this consumer: row r is token consumer_row0 + r / group, head kv_head * group + r %
  // group (zero past the end), as a [D / 64][64][64] swizzled tile.
  const uint32_t my_q_tile = q_tile + consumer * (Traits::kQBytes / Traits::kConsumers);
  for (int index = thread; index < Traits::kRowsPerConsumer * kChunks; index += 128) {
    const int r = index / kChunks;
    const int chunk = index % kChunks;
    const int row = consumer_row0 + r;
    const bool valid = row < num_rows;
    const __nv_bfloat16* source = params.q;
    if (valid) {
      source += (q_begin + row / group) * params.q_row_stride +
                (kv_head * group + row % group) * D + chunk * 8;
    }
    CpAsync16(shared_aligned + (my_q_tile - shared_base) +
                  wgmma::SwizzledChunkOffset<Traits::kRowsPerConsumer>(r, chunk),
              source, valid);
  }
  CpAsyncCommit();

  // Positions of this thread's two rows (g and g + 8 of its warp); padding rows take the block's
  // first position (they attend like a real row and are never written).
  auto row_position = [&](int row) {
    return row < num_rows ? params.positions[q_begin + row / group] : first_position;
  };
  const int my_row = consumer_row0 + warp * 16 + lane / 4;
  const int my_position[2] = {row_position(my_row), row_position(my_row + 8)};
  const int consumer_first_position = row_position(consumer_row0);

  CpAsyncWait<0>();
  wgmma::FenceAsyncProxy();
  wgmma::WarpgroupBarrier(1 + consumer);

  constexpr int kScoreRegisters = kTileN / 2;  // 64 x 128 fp32 over 128 threads
  constexpr int kOutRegisters = D / 2;
  float o[kOutRegisters];
#pragma unroll
  for (int i = 0; i < kOutRegisters; ++i) o[i] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY};  // log2 units
  float row_sum[2] = {0.f, 0.f};              // this lane's partial sums
  const float scale_log2 = params.softmax_scale * 1.4426950408889634f;
  const int quad_lane = lane & 3;

  // Q (A, K-major): k16 step ks is column tile ks / 4, 32 bytes per step inside it.
  const uint64_t q_descriptor = wgmma::SwizzledTileDescriptor(my_q_tile, 16, 1024);
  for (int tile = 0; tile < num_kv_tiles; ++tile) {
    const int stage = tile % kStages;
    const uint32_t parity = (tile / kStages) & 1;
    const uint32_t k_tile = k_tiles + stage * Traits::kKvTileBytes;
    const uint32_t v_tile = v_tiles + stage * Traits::kKvTileBytes;
    const uint64_t k_descriptor = wgmma::SwizzledTileDescriptor(k_tile, 16, 1024);
    // V (B, MN-major): k16 step kk is 16 rows = 2048 bytes; the leading offset steps between the
    // 64-column halves of head_dim 128.
    const uint64_t v_descriptor = wgmma::SwizzledTileDescriptor(v_tile, kTileN * 128, 1024);

    float s[kScoreRegisters];
    wgmma::BarrierWait(k_full + 8 * stage, parity);
    wgmma::Fence();
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      const uint32_t q_offset = (ks / 4) * (Traits::kRowsPerConsumer * 128) + (ks % 4) * 32;
      const uint32_t k_offset = (ks / 4) * (kTileN * 128) + (ks % 4) * 32;
      wgmma::MmaM64N128SharedShared(s, q_descriptor + (q_offset >> 4),
                                    k_descriptor + (k_offset >> 4), ks > 0);
    }
    wgmma::Commit();
    wgmma::Wait<0>();
    wgmma::FenceRegisters(s);

    // Online softmax on the accumulator: this lane holds rows g (half 0) and g + 8 (half 1),
    // columns 8j + 2 * quad_lane + {0, 1} of each n8 block j.
    const int kv_start = tile * kTileN;
    const bool needs_mask =
        kv_start + kTileN - 1 > consumer_first_position || kv_start + kTileN > kv_end;
    if (needs_mask) {
#pragma unroll
      for (int j = 0; j < kTileN / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int position = kv_start + j * 8 + quad_lane * 2 + (e & 1);
          if (position > my_position[e >> 1] || position >= kv_end) s[j * 4 + e] = -INFINITY;
        }
    }
    float correction[2];
    bool max_moved = false;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float max_even = -INFINITY, max_odd = -INFINITY;
#pragma unroll
      for (int j = 0; j < kTileN / 8; ++j) {
        max_even = fmaxf(max_even, s[j * 4 + half * 2]);
        max_odd = fmaxf(max_odd, s[j * 4 + half * 2 + 1]);
      }
      float tile_max = fmaxf(max_even, max_odd);
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
      const float new_max = fmaxf(row_max[half], tile_max * scale_log2);
      // A row with nothing valid yet keeps m = -inf; subtracting 0 keeps 2^x at 0, not NaN.
      const float offset = new_max == -INFINITY ? 0.f : new_max;
      correction[half] = FastExp2(row_max[half] - offset);
      max_moved |= new_max != row_max[half];
      row_max[half] = new_max;
      float sum_even = 0.f, sum_odd = 0.f;
#pragma unroll
      for (int j = 0; j < kTileN / 8; ++j) {
        const float p0 = FastExp2(fmaf(s[j * 4 + half * 2], scale_log2, -offset));
        const float p1 = FastExp2(fmaf(s[j * 4 + half * 2 + 1], scale_log2, -offset));
        s[j * 4 + half * 2] = p0;
        s[j * 4 + half * 2 + 1] = p1;
        sum_even += p0;
        sum_odd += p1;
      }
      row_sum[half] = row_sum[half] * correction[half] + (sum_even + sum_odd);
    }
    if (__any_sync(0xffffffffu, max_moved)) {
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        o[j * 4 + 0] *= correction[0];
        o[j * 4 + 1] *= correction[0];
        o[j * 4 + 2] *= correction[1];
        o[j * 4 + 3] *= correction[1];
      }
    }
    // P as bf16 A fragments: n8 blocks 2kk and 2kk + 1 of S are k16 step kk of P V.
    uint32_t p[kTileN / 16][4];
#pragma unroll
    for (int kk = 0; kk < kTileN / 16; ++kk) {
      p[kk][0] = PackBf16(s[(2 * kk) * 4 + 0], s[(2 * kk) * 4 + 1]);
      p[kk][1] = PackBf16(s[(2 * kk) * 4 + 2], s[(2 * kk) * 4 + 3]);
      p[kk][2] = PackBf16(s[(2 * kk + 1) * 4 + 0], s[(2 * kk + 1) * 4 + 1]);
      p[kk][3] = PackBf16(s[(2 * kk + 1) * 4 + 2], s[(2 * kk + 1) * 4 + 3]);
    }

    wgmma::BarrierWait(v_full + 8 * stage, parity);
    wgmma::FenceRegisters(o);
    wgmma::Fence();
#pragma unroll
    for (int kk = 0; kk < kTileN / 16; ++kk)
      wgmma::MmaRegisterShared(o, p[kk], v_descriptor + ((kk * 16 * 128) >> 4));
    wgmma::Commit();
    wgmma::Wait<0>();
    wgmma::FenceRegisters(o);
    if (lane == 0) wgmma::BarrierArrive(empty + 8 * stage);
  }

  // O / l, rows g and g + 8 of this warp; l summed over the 4 lanes of a row first.
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float sum = row_sum[half];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const float inverse = sum > 0.f ? 1.f / sum : 0.f;
    const int row = my_row + half * 8;
    if (row >= num_rows) continue;
    __nv_bfloat16* destination = params.out + (q_begin + row / group) * params.out_row_stride +
                                 (kv_head * group + row % group) * D + quad_lane * 2;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      *reinterpret_cast<__nv_bfloat162*>(destination + j * 8) =
          __floats2bfloat162_rn(o[j * 4 + half * 2] * inverse, o[j * 4 + half * 2 + 1] * inverse);
    }
  }
#endif
}

template <typename Traits>
absl::Status LaunchFlashPrefillWgmmaWithTraits(const PagedAttentionParams& params,
                                               cudaStream_t stream) {
  const int group = params.num_q_heads / params.num_kv_heads;
  const int64_t max_rows = static_cast<int64_t>(params.max_query_len) * group;
  const int64_t row_tiles = (max_rows + Traits::kTileM - 1) / Traits::kTileM;
  if (row_tiles == 0 || params.num_seqs == 0) return absl::OkStatus();
  if (row_tiles > 65535 || params.num_seqs > 65535) {  // grid y/z limits
    return absl::InvalidArgumentError(
        "wgmma flash prefill: more than 65535 query-row tiles or sequences in one batch");
  }
  LLM_CUDA_CHECK(cudaFuncSetAttribute(FlashPrefillWgmmaKernel<Traits>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      Traits::kSharedBytes));
  const dim3 grid(params.num_kv_heads, params.num_seqs, static_cast<unsigned>(row_tiles));
  FlashPrefillWgmmaKernel<Traits><<<grid, Traits::kThreads, Traits::kSharedBytes, stream>>>(params);
  LLM_CUDA_CHECK_LAUNCH(FlashPrefillWgmmaKernel);
  return absl::OkStatus();
}

}  // namespace llm::cuda
