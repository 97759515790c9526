// Flash prefill over the paged KV cache for Hopper (sm_90a), FlashAttention-3 style: wgmma on
// warpgroups, a producer warpgroup feeding two consumer warpgroups through an mbarrier pipeline.
// Same problem and semantics as flash_prefill.cuh (the mma.sync kernel, kept as the fallback):
// ragged batch, absolute positions, causal by position (kv_pos <= q_pos, kv_pos < kv_len), GQA
// rows row = token_in_sequence * group + head_in_group, mixed_batch skips flash decode's share.
//
// Work item: (sequence, kv head, 128 query rows). The grid is persistent: one thread block per
// multiprocessor (the shared memory allows no second) walks a list of items (NextWorkItem), so its
// start-up (barrier init, first copies) and the last wave's imbalance are paid once per block,
// not per item. A block has three warpgroups:
//   producer (warpgroup 0, 56 registers after setmaxnreg): gathers K and V tiles of kTileN = 128
//     positions from the pages into a kStages-deep ring of 128-byte-swizzled shared tiles with
//     cp.async. Thread p owns tile row p (position tile * 128 + p) and walks its (block-table
//     index, slot) pair from tile to tile by adding 128 positions (no division in the loop, as in
//     flash_prefill.cuh); the warp copies two (head_dim 128) or four (64) rows per instruction,
//     16 bytes a lane, taking each row's address from its owner by a shuffle, so the loads are
//     coalesced. After a tile's copies land (cp.async.wait_group) each producer thread fences the
//     async proxy and arrives on the tile's "K full" / "V full" barrier (separately, so S = Q K^T
//     starts while V still loads), then waits on the stage's "empty" barrier before reusing it.
//     The ring runs on across items: the next item's first tiles load during this one's last.
//   consumers (warpgroups 1 and 2, 224 registers): 64 query rows each, Q in shared memory (loaded
//     by the consumer itself; the next item's Q right after the last S = Q K^T of the current one,
//     so it lands during that tile's softmax, P V and the output stores). Per K/V tile: S = Q K^T
//     by wgmma m64n128k16 (both operands in shared memory, K-major), the online softmax on the
//     accumulator registers (scale folded into
//     the exp2 FMA, causal mask only on tiles that reach past the warpgroup's first position, O
//     rescaled only when some row's max moved), P converted to bf16 in registers as the A operand
//     of O += P V (wgmma m64nDk16, V MN-major in shared memory through the transpose bit); then
//     each consumer warp arrives on the stage's "empty" barrier. A tile whose last 64 positions
//     are masked for all of a consumer's rows (the diagonal tile of half the row tiles) runs
//     S at m64n64k16 and P V over 4 k16 steps instead of 8.
// The two consumers are independent (no block barrier in the loop), so one's softmax overlaps the
// other's matrix products. Items are ordered as flash_prefill.cuh's grid (kv head fastest, then
// sequence, then row tile reversed: longest first) and dealt to the blocks in snaking rounds.
//
// Built only for sm_90a (flash_prefill_wgmma_hd{64,128}.cu, an object library with
// CUDA_ARCHITECTURES 90a); any other device pass compiles to a trap, and the dispatch
// (attention_dispatch.cc) launches it only on compute capability 9.0. Reference: the CPU backend's
// PagedAttention; test: tests/kernels/gpu/attention_test.cc (both prefill kernels); benchmark:
// bench/bench_kernels.cu, section prefill.
#pragma once

#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

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

// The work of one launch: num_pairs (sequence, kv head) pairs x row_tiles query-row tiles, in the
// order below, dealt to the resident thread blocks.
struct FlashPrefillWgmmaSchedule {
  int32_t row_tiles = 0;  // ceil(max_query_len * group / kTileM)
  int32_t num_pairs = 0;  // num_seqs * num_kv_heads; pair p = (sequence p / Hkv, kv head p % Hkv)
  int32_t num_items = 0;  // row_tiles * num_pairs
  // Tiles whose last 64 positions lie past all of a consumer's rows run S and P V at n64 / k64.
  bool half_diagonal = true;
};

// One work item: a (sequence, kv head, 128 query rows) tile.
struct FlashPrefillWgmmaWork {
  int seq = 0;
  int kv_head = 0;
  int row0 = 0;      // first query row (row = token_in_sequence * group + head_in_group)
  int num_rows = 0;  // query rows of the sequence
  int q_begin = 0;   // first token of the sequence
  bool valid = false;
};

// Item order (the old grid's): row tiles from the last (the longest KV range) down, every pair at
// one row tile before the next, so the items are dealt longest first across the whole batch and
// the last ones are the shortest. Thread block b of G takes the items of round k
// at k * G + b (k even) or k * G + G - 1 - b (k odd): the rounds snake, so a block that drew a long
// item in one round draws a short one in the next. Empty items (row tiles past a shorter
// sequence's rows, flash decode's sequences of a mixed batch) are skipped. Starts at `round` and
// leaves it at the item returned.
__device__ __forceinline__ FlashPrefillWgmmaWork
NextWorkItem(const PagedAttentionParams& params, const FlashPrefillWgmmaSchedule& schedule,
             int group, int tile_rows, int& round) {
  const int blocks = static_cast<int>(gridDim.x);
  const int block = static_cast<int>(blockIdx.x);
  FlashPrefillWgmmaWork work;
  for (; round * blocks < schedule.num_items; ++round) {
    const int item = round * blocks + ((round & 1) ? blocks - 1 - block : block);
    if (item >= schedule.num_items) continue;
    const int pair = item % schedule.num_pairs;
    work.kv_head = pair % params.num_kv_heads;
    work.seq = pair / params.num_kv_heads;
    work.row0 = (schedule.row_tiles - 1 - item / schedule.num_pairs) * tile_rows;
    work.q_begin = params.query_start[work.seq];
    work.num_rows = (params.query_start[work.seq + 1] - work.q_begin) * group;
    if (work.row0 >= work.num_rows) continue;
    if (params.mixed_batch && work.num_rows <= kFlashDecodeMaxRows) continue;  // flash decode's
    work.valid = true;
    return work;
  }
  return work;
}

template <typename Traits>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    FlashPrefillWgmmaKernel(const __grid_constant__ PagedAttentionParams params,
                            const FlashPrefillWgmmaSchedule schedule) {
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

  const int group = params.num_q_heads / params.num_kv_heads;
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

  // KV positions a tile of rows [row0, row0 + kTileM) attends to: [0, kv_end).
  auto kv_end_of = [&](const FlashPrefillWgmmaWork& work) {
    const int last_row = min(work.row0 + kTileM, work.num_rows) - 1;
    const int last_position = params.positions[work.q_begin + last_row / group];
    return min(params.kv_lens[work.seq], last_position + 1);
  };

  // Warp-uniform role (the shuffle tells the compiler so).
  const int warpgroup = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / 128, 0);
  const int lane = threadIdx.x % 32;

  if (warpgroup == 0) {
    // ---------------------------------------------------------------------------- producer
    // One stream of K/V tiles through the ring for all of this block's items: tile g of the
    // stream uses stage g % kStages, so the next item's first tiles load while the consumers
    // finish the current one.
    wgmma::ReleaseRegisters<Traits::kProducerRegisters>();
    const int thread = threadIdx.x;  // owns row `thread` of every K/V tile
    const int warp_row0 = thread & ~31;
    const kvcache::KvLayout layout = params.layout;
    const int block_size = layout.block_size;
    const int advance_blocks = kTileN / block_size;
    const int advance_slots = kTileN % block_size;
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
    int stream_tile = 0;  // tiles issued so far
    int round = 0;
    for (FlashPrefillWgmmaWork work = NextWorkItem(params, schedule, group, kTileM, round);
         work.valid; ++round, work = NextWorkItem(params, schedule, group, kTileM, round)) {
      const int kv_end = kv_end_of(work);
      const int num_kv_tiles = (kv_end + kTileN - 1) / kTileN;
      const int* block_table =
          params.block_tables + static_cast<int64_t>(work.seq) * params.block_table_stride;
      int cursor_block = thread / block_size;
      int cursor_slot = thread % block_size;
      // Row of this thread's position in the layer's [block][kv_head][slot] rows, or -1 past
      // kv_end.
      auto pool_row = [&](int tile) {
        return tile * kTileN + thread < kv_end
                   ? (block_table[cursor_block] * layout.num_kv_heads + work.kv_head) * block_size +
                         cursor_slot
                   : -1;
      };
      int my_pool_row = num_kv_tiles > 0 ? pool_row(0) : -1;
      for (int tile = 0; tile < num_kv_tiles; ++tile, ++stream_tile) {
        const int stage = stream_tile % kStages;
        if (stream_tile >= kStages)
          wgmma::BarrierWait(empty + 8 * stage, ((stream_tile / kStages) + 1) & 1);
        copy_tile(params.k_cache, k_tiles + stage * Traits::kKvTileBytes, my_pool_row);
        copy_tile(params.v_cache, v_tiles + stage * Traits::kKvTileBytes, my_pool_row);
        cursor_slot += advance_slots;
        cursor_block += advance_blocks;
        if (cursor_slot >= block_size) {
          cursor_slot -= block_size;
          ++cursor_block;
        }
        if (tile + 1 < num_kv_tiles) my_pool_row = pool_row(tile + 1);
        // The previous tile of the stream (two commit groups older than this one's) has landed:
        // publish it.
        if (stream_tile > 0) {
          const int previous = (stream_tile - 1) % kStages;
          CpAsyncWait<3>();
          wgmma::FenceAsyncProxy();
          wgmma::BarrierArrive(k_full + 8 * previous);
          CpAsyncWait<2>();
          wgmma::FenceAsyncProxy();
          wgmma::BarrierArrive(v_full + 8 * previous);
        }
      }
    }
    if (stream_tile > 0) {
      const int last = (stream_tile - 1) % kStages;
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
  const int quad_lane = lane & 3;
  const float scale_log2 = params.softmax_scale * 1.4426950408889634f;
  const uint32_t my_q_tile = q_tile + consumer * (Traits::kQBytes / Traits::kConsumers);
  // Q (A, K-major): k16 step ks is column tile ks / 4, 32 bytes per step inside it.
  const uint64_t q_descriptor = wgmma::SwizzledTileDescriptor(my_q_tile, 16, 1024);

  // Copies this consumer's 64 Q rows of `work` into its tile: row r is token (row0 + 64 *
  // consumer + r) / group, head kv_head * group + that row % group (zero past the end), as a
  // [D / 64][64][64] swizzled tile.
  auto load_q = [&](const FlashPrefillWgmmaWork& work) {
    const int consumer_row0 = work.row0 + consumer * Traits::kRowsPerConsumer;
    for (int index = thread; index < Traits::kRowsPerConsumer * kChunks; index += 128) {
      const int r = index / kChunks;
      const int chunk = index % kChunks;
      const int row = consumer_row0 + r;
      const bool valid = row < work.num_rows;
      const __nv_bfloat16* source = params.q;
      if (valid) {
        source += (work.q_begin + row / group) * params.q_row_stride +
                  (work.kv_head * group + row % group) * D + chunk * 8;
      }
      CpAsync16(shared_aligned + (my_q_tile - shared_base) +
                    wgmma::SwizzledChunkOffset<Traits::kRowsPerConsumer>(r, chunk),
                source, valid);
    }
    CpAsyncCommit();
  };

  int stream_tile = 0;  // K/V tiles consumed so far, counted as the producer counts them
  int round = 0;
  FlashPrefillWgmmaWork work = NextWorkItem(params, schedule, group, kTileM, round);
  bool q_requested = false;  // the Q copy of `work` is in flight (issued during the last item)
  while (work.valid) {
    if (!q_requested) load_q(work);
    ++round;
    const FlashPrefillWgmmaWork next = NextWorkItem(params, schedule, group, kTileM, round);

    const int kv_end = kv_end_of(work);
    const int num_kv_tiles = (kv_end + kTileN - 1) / kTileN;
    const int consumer_row0 = work.row0 + consumer * Traits::kRowsPerConsumer;
    const int first_position = params.positions[work.q_begin + work.row0 / group];
    // Positions of this thread's two rows (g and g + 8 of its warp); padding rows take the
    // item's first position (they attend like a real row and are never written).
    auto row_position = [&](int row) {
      return row < work.num_rows ? params.positions[work.q_begin + row / group] : first_position;
    };
    const int my_row = consumer_row0 + warp * 16 + lane / 4;
    const int my_position[2] = {row_position(my_row), row_position(my_row + 8)};
    const int consumer_first_position = row_position(consumer_row0);
    // Every row of this consumer attends to positions < half_end only (positions grow with the
    // row; padding rows take a smaller one).
    const int half_end =
        min(kv_end,
            row_position(min(consumer_row0 + Traits::kRowsPerConsumer - 1, work.num_rows - 1)) + 1);

    CpAsyncWait<0>();
    wgmma::FenceAsyncProxy();
    wgmma::WarpgroupBarrier(1 + consumer);
    q_requested = false;

    constexpr int kScoreRegisters = kTileN / 2;  // 64 x 128 fp32 over 128 threads
    constexpr int kOutRegisters = D / 2;
    float o[kOutRegisters];
#pragma unroll
    for (int i = 0; i < kOutRegisters; ++i) o[i] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY};  // log2 units
    float row_sum[2] = {0.f, 0.f};              // this lane's partial sums

    for (int tile = 0; tile < num_kv_tiles; ++tile, ++stream_tile) {
      const int stage = stream_tile % kStages;
      const uint32_t parity = (stream_tile / kStages) & 1;
      const uint32_t k_tile = k_tiles + stage * Traits::kKvTileBytes;
      const uint32_t v_tile = v_tiles + stage * Traits::kKvTileBytes;
      const uint64_t k_descriptor = wgmma::SwizzledTileDescriptor(k_tile, 16, 1024);
      // V (B, MN-major): k16 step kk is 16 rows = 2048 bytes; the leading offset steps between
      // the 64-column halves of head_dim 128.
      const uint64_t v_descriptor = wgmma::SwizzledTileDescriptor(v_tile, kTileN * 128, 1024);
      const int kv_start = tile * kTileN;
      // The tile's last 64 positions are masked for all of this consumer's rows: S over the
      // first 64 columns (the rest are set to -inf by the mask below) and P V over 4 k16 steps.
      const bool half_tile = schedule.half_diagonal && kv_start + kTileN / 2 >= half_end;

      float s[kScoreRegisters];
      wgmma::BarrierWait(k_full + 8 * stage, parity);
      if (half_tile) {
        float s_half[kScoreRegisters / 2];
        wgmma::Fence();
#pragma unroll
        for (int ks = 0; ks < D / 16; ++ks) {
          const uint32_t q_offset = (ks / 4) * (Traits::kRowsPerConsumer * 128) + (ks % 4) * 32;
          const uint32_t k_offset = (ks / 4) * (kTileN * 128) + (ks % 4) * 32;
          wgmma::MmaM64N64SharedShared(s_half, q_descriptor + (q_offset >> 4),
                                       k_descriptor + (k_offset >> 4), ks > 0);
        }
        wgmma::Commit();
        wgmma::Wait<0>();
        wgmma::FenceRegisters(s_half);
#pragma unroll
        for (int i = 0; i < kScoreRegisters / 2; ++i) {
          s[i] = s_half[i];
          s[kScoreRegisters / 2 + i] = -INFINITY;
        }
      } else {
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
      }
      wgmma::FenceRegisters(s);
      if (tile == num_kv_tiles - 1 && next.valid) {
        // Q is read for the last time: load the next item's while this one's softmax, P V and
        // output run (every warp of the warpgroup past its wait first).
        wgmma::WarpgroupBarrier(1 + consumer);
        load_q(next);
        q_requested = true;
      }

      // Online softmax on the accumulator: this lane holds rows g (half 0) and g + 8 (half 1),
      // columns 8j + 2 * quad_lane + {0, 1} of each n8 block j.
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
      if (half_tile) {
        wgmma::FenceRegisters(o);
        wgmma::Fence();
#pragma unroll
        for (int kk = 0; kk < kTileN / 32; ++kk)
          wgmma::MmaRegisterShared(o, p[kk], v_descriptor + ((kk * 16 * 128) >> 4));
        wgmma::Commit();
        wgmma::Wait<0>();
      } else {
        wgmma::FenceRegisters(o);
        wgmma::Fence();
#pragma unroll
        for (int kk = 0; kk < kTileN / 16; ++kk)
          wgmma::MmaRegisterShared(o, p[kk], v_descriptor + ((kk * 16 * 128) >> 4));
        wgmma::Commit();
        wgmma::Wait<0>();
      }
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
      if (row >= work.num_rows) continue;
      __nv_bfloat16* destination = params.out +
                                   (work.q_begin + row / group) * params.out_row_stride +
                                   (work.kv_head * group + row % group) * D + quad_lane * 2;
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        *reinterpret_cast<__nv_bfloat162*>(destination + j * 8) =
            __floats2bfloat162_rn(o[j * 4 + half * 2] * inverse, o[j * 4 + half * 2 + 1] * inverse);
      }
    }
    work = next;
  }
#endif
}

// Launch options read once from the environment: LLM_FLASH_PREFILL_WGMMA_PERSISTENT=0 launches
// one thread block per item instead of one per multiprocessor; LLM_FLASH_PREFILL_WGMMA_CTAS=N
// caps the grid at N blocks (tests, sanitizers: many items per block);
// LLM_FLASH_PREFILL_WGMMA_HALF_DIAGONAL=0 runs every tile at full width. The first and the last
// reproduce the kernel before the persistent grid (docs/perf/2026-11-24-h100-wgmma/, run 4).
struct FlashPrefillWgmmaOptions {
  bool persistent = true;
  int max_blocks = 0;
  bool half_diagonal = true;
};

inline const FlashPrefillWgmmaOptions& FlashPrefillWgmmaOptionsFromEnvironment() {
  static const FlashPrefillWgmmaOptions options = [] {
    FlashPrefillWgmmaOptions o;
    auto integer = [](const char* name, int fallback) {
      const char* value = std::getenv(name);
      return value != nullptr && *value != '\0' ? std::atoi(value) : fallback;
    };
    o.persistent = integer("LLM_FLASH_PREFILL_WGMMA_PERSISTENT", 1) != 0;
    o.max_blocks = integer("LLM_FLASH_PREFILL_WGMMA_CTAS", 0);
    o.half_diagonal = integer("LLM_FLASH_PREFILL_WGMMA_HALF_DIAGONAL", 1) != 0;
    return o;
  }();
  return options;
}

template <typename Traits>
absl::Status LaunchFlashPrefillWgmmaWithTraits(const PagedAttentionParams& params,
                                               cudaStream_t stream) {
  const int group = params.num_q_heads / params.num_kv_heads;
  const int64_t max_rows = static_cast<int64_t>(params.max_query_len) * group;
  const int64_t row_tiles = (max_rows + Traits::kTileM - 1) / Traits::kTileM;
  const int64_t num_pairs = static_cast<int64_t>(params.num_seqs) * params.num_kv_heads;
  if (row_tiles == 0 || num_pairs == 0) return absl::OkStatus();
  // Item indices (and round * blocks past the last one) stay in int.
  if (row_tiles * num_pairs > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(
        "wgmma flash prefill: more than 2^30 (sequence, kv head, query-row tile) items in one "
        "batch; split the batch");
  }
  const FlashPrefillWgmmaOptions& options = FlashPrefillWgmmaOptionsFromEnvironment();
  FlashPrefillWgmmaSchedule schedule;
  schedule.row_tiles = static_cast<int32_t>(row_tiles);
  schedule.num_pairs = static_cast<int32_t>(num_pairs);
  schedule.num_items = static_cast<int32_t>(row_tiles * num_pairs);
  schedule.half_diagonal = options.half_diagonal;

  int64_t blocks = schedule.num_items;
  if (options.persistent) {
    // One resident block per multiprocessor (the shared memory allows no second).
    int device = 0, multiprocessors = 0;
    LLM_CUDA_CHECK(cudaGetDevice(&device));
    LLM_CUDA_CHECK(
        cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device));
    blocks = std::min<int64_t>(blocks, multiprocessors);
  }
  if (options.max_blocks > 0) blocks = std::min<int64_t>(blocks, options.max_blocks);

  LLM_CUDA_CHECK(cudaFuncSetAttribute(FlashPrefillWgmmaKernel<Traits>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      Traits::kSharedBytes));
  FlashPrefillWgmmaKernel<Traits>
      <<<static_cast<unsigned>(blocks), Traits::kThreads, Traits::kSharedBytes, stream>>>(params,
                                                                                          schedule);
  LLM_CUDA_CHECK_LAUNCH(FlashPrefillWgmmaKernel);
  return absl::OkStatus();
}

}  // namespace llm::cuda
