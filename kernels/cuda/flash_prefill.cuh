// Flash prefill over the paged KV cache: tensor-core (mma.sync m16n8k16, bf16 -> fp32) attention
// for a ragged batch of query tokens with absolute positions, causal by position (kv_pos <= q_pos),
// grouped-query attention.
//
// Tiling. A thread block owns (sequence, kv head, tile of kTileM query rows). A query row is one
// (token, query head of the group) pair, row = token_in_sequence * group + head_in_group, so every
// query head of a GQA group shares each K/V tile the block loads (K/V bytes read once per group,
// not once per query head). kWarps warps each take 16 * kMTiles rows. The block walks the
// sequence's K/V positions [0, min(kv_len, last query position + 1)) in tiles of kTileN: K and V
// tiles are gathered from the pages (row = position, through block_tables and kvcache::KvLayout) by
// cp.async into a double buffer, so the next tile loads while this one computes (attention_tile.cuh
// does the math). Only tiles that reach past the tile's first query position apply the causal mask.
// Blocks are scheduled last tile first over the whole grid: those see the most K/V.
//
// Reference: the CPU backend's PagedAttention (kernels/cpu/); test: tests/kernels/gpu/
// attention_test.cc; benchmark: bench/bench_kernels.cu (vs torch SDPA, bench/sdpa_anchor.py).
// Instantiated per head_dim in flash_prefill_hd64.cu and flash_prefill_hd128.cu.
#pragma once

#include <cuda_bf16.h>

#include "kernels/cuda/attention_params.h"
#include "kernels/cuda/attention_tile.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/mma.cuh"

namespace llm::cuda {

// kLazyRescale: see WarpFlashState. kMinBlocksPerSm: __launch_bounds__'s occupancy floor (2 caps
// 8-warp blocks at 128 registers).
template <int kHeadDim_, int kWarps_, int kMTiles_, int kTileN_, bool kLazyRescale_ = false,
          int kMinBlocksPerSm_ = 1>
struct FlashPrefillTraits {
  static constexpr int kMinBlocksPerSm = kMinBlocksPerSm_;
  static constexpr bool kLazyRescale = kLazyRescale_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kMTiles = kMTiles_;
  static constexpr int kTileN = kTileN_;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRowsPerWarp = 16 * kMTiles;
  static constexpr int kTileM = kWarps * kRowsPerWarp;
  static constexpr int kChunksPerRow = kHeadDim / 8;  // 16-byte chunks
  // Q tile + double-buffered K and V tiles.
  static constexpr int kSharedBytes = (kTileM + 4 * kTileN) * kHeadDim * 2;
};

template <typename Traits>
__global__ void __launch_bounds__(Traits::kThreads, Traits::kMinBlocksPerSm)
    FlashPrefillKernel(const PagedAttentionParams params) {
  constexpr int D = Traits::kHeadDim;
  constexpr int kTileM = Traits::kTileM;
  constexpr int kTileN = Traits::kTileN;
  constexpr int kChunks = Traits::kChunksPerRow;
  extern __shared__ __align__(128) unsigned char shared_raw[];
  auto* smem_q = reinterpret_cast<__nv_bfloat16*>(shared_raw);
  __nv_bfloat16* smem_k = smem_q + kTileM * D;      // [2][kTileN][D]
  __nv_bfloat16* smem_v = smem_k + 2 * kTileN * D;  // [2][kTileN][D]

  // Blocks are dispatched x fastest: (kv head, sequence) pairs inner, row tiles outer and last tile
  // first, so the whole grid runs longest-first and the final wave holds the shortest tiles.
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
  const int* block_table =
      params.block_tables + static_cast<int64_t>(seq) * params.block_table_stride;
  const kvcache::KvLayout layout = params.layout;

  // Q tile: row r is token row0 + r / group, head kv_head * group + r % group (zero past the end).
  for (int index = threadIdx.x; index < kTileM * kChunks; index += Traits::kThreads) {
    const int r = index / kChunks;
    const int chunk = index % kChunks;
    const int row = row0 + r;
    const bool valid = row < num_rows;
    const __nv_bfloat16* source = params.q;
    if (valid) {
      source += (q_begin + row / group) * params.q_row_stride +
                (kv_head * group + row % group) * D + chunk * 8;
    }
    CpAsync16(smem_q + SwizzledOffset<D>(r, chunk * 8), source, valid);
  }
  // K/V tile `tile` into buffer `buffer`: row r is position tile * kTileN + r of the sequence. Each
  // thread copies the same 16-byte column chunk of kRowsPerThread rows (my_row0 + k * kRowStep) of
  // every tile, so it walks its rows' (block-table index, slot) pairs from one tile to the next by
  // adding kTileN positions: the pairs kvcache::LocatePosition defines (block_table[p / block_size],
  // p % block_size), without a division per row per tile (integer division was ~20% of the
  // kernel's non-MMA instructions). Tiles must therefore be loaded in order 0, 1, 2, ...
  constexpr int kRowStep = Traits::kThreads / kChunks;
  constexpr int kRowsPerThread = kTileN / kRowStep;
  static_assert(Traits::kThreads % kChunks == 0 && kTileN % kRowStep == 0, "uneven K/V tile copy");
  const int my_chunk = threadIdx.x % kChunks;
  const int my_row0 = threadIdx.x / kChunks;
  const int block_size = layout.block_size;
  const int advance_blocks = kTileN / block_size;
  const int advance_slots = kTileN % block_size;
  int cursor_block[kRowsPerThread];
  int cursor_slot[kRowsPerThread];
#pragma unroll
  for (int k = 0; k < kRowsPerThread; ++k) {
    const int position = my_row0 + k * kRowStep;
    cursor_block[k] = position / block_size;
    cursor_slot[k] = position % block_size;
  }
  auto load_next_kv = [&](int tile, int buffer) {
#pragma unroll
    for (int k = 0; k < kRowsPerThread; ++k) {
      const int r = my_row0 + k * kRowStep;
      const bool valid = tile * kTileN + r < kv_end;
      const int64_t offset =
          valid ? layout.offset_in_layer(block_table[cursor_block[k]], kv_head, cursor_slot[k],
                                         my_chunk * 8)
                : 0;
      const int destination = buffer * kTileN * D + SwizzledOffset<D>(r, my_chunk * 8);
      CpAsync16(smem_k + destination, params.k_cache + offset, valid);
      CpAsync16(smem_v + destination, params.v_cache + offset, valid);
      cursor_slot[k] += advance_slots;
      cursor_block[k] += advance_blocks;
      if (cursor_slot[k] >= block_size) {
        cursor_slot[k] -= block_size;
        ++cursor_block[k];
      }
    }
  };
  load_next_kv(0, 0);
  CpAsyncCommit();

  // Absolute position of each query row of the tile (padding rows reuse the first), in shared
  // memory rather than registers: only the diagonal tiles read it.
  __shared__ int row_position[kTileM];
  for (int r = threadIdx.x; r < kTileM; r += Traits::kThreads) {
    const int row = row0 + r;
    row_position[r] = row < num_rows ? params.positions[q_begin + row / group] : first_position;
  }
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int warp_row0 = warp * Traits::kRowsPerWarp;
  const int* my_row_position = row_position + warp_row0 + (lane >> 2);

  WarpFlashState<D, kTileN, Traits::kMTiles, Traits::kLazyRescale> state;
  state.Init();
  const float scale_log2 = params.softmax_scale * 1.4426950408889634f;

  for (int tile = 0; tile < num_kv_tiles; ++tile) {
    if (tile + 1 < num_kv_tiles) load_next_kv(tile + 1, (tile + 1) & 1);
    CpAsyncCommit();
    CpAsyncWait<1>();
    __syncthreads();
    const int kv_start = tile * kTileN;
    const int buffer_offset = (tile & 1) * kTileN * D;
    const bool needs_mask = kv_start + kTileN - 1 > first_position || kv_start + kTileN > kv_end;
    if (needs_mask) {
      state.template Step<true>(smem_q, warp_row0, smem_k + buffer_offset, smem_v + buffer_offset,
                                0, scale_log2, [&](int mt, int half, int column) {
                                  const int position = kv_start + column;
                                  return position <= my_row_position[mt * 16 + half * 8] &&
                                         position < kv_end;
                                });
    } else {
      state.template Step<false>(smem_q, warp_row0, smem_k + buffer_offset, smem_v + buffer_offset,
                                 0, scale_log2, [](int, int, int) { return true; });
    }
    __syncthreads();
  }

  state.Finish();
  state.ForEachOutput([&](int local_row, int column, float value0, float value1) {
    const int row = row0 + warp_row0 + local_row;
    if (row >= num_rows) return;
    __nv_bfloat16* destination = params.out + (q_begin + row / group) * params.out_row_stride +
                                 (kv_head * group + row % group) * D + column;
    *reinterpret_cast<__nv_bfloat162*>(destination) = __floats2bfloat162_rn(value0, value1);
  });
}

template <typename Traits>
absl::Status LaunchFlashPrefillWithTraits(const PagedAttentionParams& params, cudaStream_t stream) {
  const int group = params.num_q_heads / params.num_kv_heads;
  const int64_t max_rows = static_cast<int64_t>(params.max_query_len) * group;
  const int64_t row_tiles = (max_rows + Traits::kTileM - 1) / Traits::kTileM;
  if (row_tiles == 0 || params.num_seqs == 0) return absl::OkStatus();
  if (row_tiles > 65535 || params.num_seqs > 65535) {  // grid y/z limits
    return absl::InvalidArgumentError(
        "flash prefill: more than 65535 query-row tiles or sequences in one batch");
  }
  // Set on every launch (a cheap host call): a cached flag could be shared between two copies of
  // this kernel (the plugin's and a benchmark's), leaving one without the larger limit.
  LLM_CUDA_CHECK(cudaFuncSetAttribute(FlashPrefillKernel<Traits>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      Traits::kSharedBytes));
  const dim3 grid(params.num_kv_heads, params.num_seqs, static_cast<unsigned>(row_tiles));
  FlashPrefillKernel<Traits><<<grid, Traits::kThreads, Traits::kSharedBytes, stream>>>(params);
  LLM_CUDA_CHECK_LAUNCH(FlashPrefillKernel);
  return absl::OkStatus();
}

// Per-head_dim entry points (one translation unit each).
absl::Status LaunchFlashPrefillHeadDim64(const PagedAttentionParams& params, cudaStream_t stream);
absl::Status LaunchFlashPrefillHeadDim128(const PagedAttentionParams& params, cudaStream_t stream);

}  // namespace llm::cuda
