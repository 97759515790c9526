// Split-KV flash decode over the paged KV cache: a few query tokens per sequence (group *
// query tokens <= 16 rows) against long contexts.
//
// Work split (FlashDecoding). A sequence's K/V range [0, min(kv_len, last query position + 1)) is
// cut into chunks of kv_chunk_size positions; a thread block owns (sequence, kv head, chunk), so
// one 32k-token sequence still spreads over the whole GPU. All query rows of the GQA group (row =
// token * group + head) sit in one 16-row mma tile, so each K/V byte is read once per group. Inside
// the block, kWarps warps take the chunk's kTileN-position K/V tiles round robin, each with its own
// kStages-deep cp.async pipeline (no block-wide barrier in the loop), and run the warp flash step
// of attention_tile.cuh. At the end the warps' (m, l, O) are merged through shared memory into the
// block's O_c = O / l and lse_c = m + log2(l) per row. The chunks of a row combine by log-sum-exp:
//   O = sum_c 2^(lse_c - lse_max) O_c / sum_c 2^(lse_c - lse_max),
// and a chunk past a row's position (lse_c = -inf) has weight 0. Three ways to finish:
//  * one chunk: the block writes bf16 output directly;
//  * up to FlashDecodeClusterSplits() chunks (8, the portable cluster size; compute capability 9.0):
//    the launch groups the chunks of one (sequence, kv head) into a thread-block cluster of
//    num_splits blocks; each block leaves (O_c, lse_c) in its shared memory, and after a cluster
//    barrier block r combines output elements r, r + num_splits, ... (4 columns each) reading every
//    block's shared memory through distributed shared memory, and writes bf16 output: no fp32
//    partials in device memory and no second kernel (the merge kernel cost 3.5 us per layer at B1);
//  * more chunks (long contexts: 32 for one 32k sequence): fp32 O_c and lse_c per (token, head,
//    chunk) go to partial_out / partial_lse and MergeSplitsKernel (flash_decode_merge.cu) combines
//    them.
//
// Reference: the CPU backend's PagedAttention; test: tests/kernels/gpu/attention_test.cc;
// benchmark: bench/bench_kernels.cu (bandwidth vs a device copy and torch SDPA). Instantiated per
// head_dim in flash_decode_hd64.cu and flash_decode_hd128.cu.
#pragma once

#include <cooperative_groups.h>
#include <cuda_bf16.h>

#include "kernels/cuda/attention_params.h"
#include "kernels/cuda/attention_tile.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/mma.cuh"

namespace llm::cuda {

template <int kHeadDim_, int kWarps_, int kTileN_, int kStages_>
struct FlashDecodeTraits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kTileN = kTileN_;
  static constexpr int kStages = kStages_;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRows = 16;
  static constexpr int kChunksPerRow = kHeadDim / 8;
  static constexpr int kStageElements = 2 * kTileN * kHeadDim;  // K then V
  static constexpr int kPipelineBytes = kWarps * kStages * kStageElements * 2;
  static constexpr int kMergeBytes = kWarps * kRows * (kHeadDim + 2) * 4;
  static constexpr int kSharedBytes =
      kRows * kHeadDim * 2 + (kPipelineBytes > kMergeBytes ? kPipelineBytes : kMergeBytes);
  // The cluster merge's receive area, after everything else: from every split of the cluster, the
  // 16-byte pieces of O_c this block combines ([split][piece]) and lse_c of every row
  // ([split][row]). Other blocks store into it while this one may still stream K/V, so it cannot
  // share the pipeline's memory; the cluster kernel runs at most one block per SM anyway
  // (ChooseDecodeSplits), so the extra bytes cost no occupancy there.
  static constexpr int kPieces = kRows * kHeadDim / 4;
  static constexpr int kExchangeBytes = (kPieces + kFlashDecodeMaxClusterSplits) * 16 +
                                        kFlashDecodeMaxClusterSplits * kRows * 4;
  static constexpr int kClusterSharedBytes = kSharedBytes + kExchangeBytes;
  static_assert(kSharedBytes % 16 == 0, "the receive area holds 16-byte pieces");
};

// How the blocks' results leave the kernel. kDirect: bf16 output (one split) or fp32 partials for
// MergeSplitsKernel. kClusterPush: the splits are one cluster; each block stores its O_c pieces
// and lse_c into the shared memory of the blocks that combine them, one cluster barrier, then each
// block combines its pieces from its own shared memory. kClusterPull (kept for comparison): each
// block leaves O_c / lse_c in its own shared memory; after a barrier the combining blocks read them
// remotely, and a second barrier keeps every block alive until the reads are done.
enum class DecodeMerge { kDirect, kClusterPush, kClusterPull };

// Combines, in block `rank` of a cluster of `num_splits`, the pieces e = rank, rank + num_splits,
// ... of the output (piece e: row e / (D / 4), columns 4 (e % (D / 4)) + 0..3), given each split's
// lse_c for the piece's row and a way to load that split's piece of O_c; writes bf16 output.
template <typename Traits, typename LseFn, typename PieceFn>
__device__ __forceinline__ void CombinePieces(const PagedAttentionParams& params, int rank,
                                              int q_begin, int kv_head, int group, int num_rows,
                                              LseFn&& lse_of, PieceFn&& piece_of) {
  constexpr int D = Traits::kHeadDim;
  const int num_splits = params.num_splits;
  const int pieces = num_rows * (D / 4);
  for (int piece = rank + num_splits * threadIdx.x; piece < pieces;
       piece += num_splits * Traits::kThreads) {
    const int row = piece / (D / 4);
    const int column = piece % (D / 4) * 4;
    float lse[kFlashDecodeMaxClusterSplits];
    float lse_max = -INFINITY;
#pragma unroll
    for (int c = 0; c < kFlashDecodeMaxClusterSplits; ++c) {
      lse[c] = c < num_splits ? lse_of(c, row) : -INFINITY;
      lse_max = fmaxf(lse_max, lse[c]);
    }
    float4 sum_o = make_float4(0.f, 0.f, 0.f, 0.f);
    float sum_weight = 0.f;
    if (lse_max != -INFINITY) {
#pragma unroll
      for (int c = 0; c < kFlashDecodeMaxClusterSplits; ++c) {
        if (lse[c] == -INFINITY) continue;  // weight 0; an empty chunk sends no O_c
        const float weight = exp2f(lse[c] - lse_max);
        const float4 o = piece_of(c, piece, row, column);
        sum_weight += weight;
        sum_o.x += weight * o.x;
        sum_o.y += weight * o.y;
        sum_o.z += weight * o.z;
        sum_o.w += weight * o.w;
      }
    }
    const float inverse = sum_weight > 0.f ? 1.f / sum_weight : 0.f;
    __nv_bfloat16* out = params.out + (q_begin + row / group) * params.out_row_stride +
                         (kv_head * group + row % group) * D + column;
    out[0] = __float2bfloat16_rn(sum_o.x * inverse);
    out[1] = __float2bfloat16_rn(sum_o.y * inverse);
    out[2] = __float2bfloat16_rn(sum_o.z * inverse);
    out[3] = __float2bfloat16_rn(sum_o.w * inverse);
  }
}

// kEarlyLoads: the sequence's query range, its length and the block-table entries of each warp's
// first tiles are loaded together at the start, and the chunk ends at kv_len (positions past the
// last query are masked anyway), so K/V copies start one dependent round trip after the kernel
// does instead of three (query_start -> positions -> block table -> K/V).
template <typename Traits, DecodeMerge kMerge, bool kEarlyLoads>
__global__ void __launch_bounds__(Traits::kThreads)
    FlashDecodeKernel(const PagedAttentionParams params) {
  constexpr int D = Traits::kHeadDim;
  constexpr int kTileN = Traits::kTileN;
  constexpr int kStages = Traits::kStages;
  constexpr int kChunks = Traits::kChunksPerRow;
  constexpr int kRows = Traits::kRows;
  constexpr bool kCluster = kMerge != DecodeMerge::kDirect;
  extern __shared__ __align__(128) unsigned char shared_raw[];
  auto* smem_q = reinterpret_cast<__nv_bfloat16*>(shared_raw);
  __nv_bfloat16* smem_pipeline = smem_q + kRows * D;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  // Distributed shared memory may be written only once its block runs: every block arrives here
  // and waits (long since complete by then) before its first remote store.
  if constexpr (kMerge == DecodeMerge::kClusterPush) cg::this_cluster().barrier_arrive();
  // Lets the merge kernel (launched with programmatic stream serialization) start its blocks
  // early; it waits in griddepcontrol.wait until this grid has finished and flushed its writes.
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#else
  if constexpr (kCluster) __trap();  // launched only on compute capability >= 9.0
#endif
  const int split = blockIdx.x;
  const int kv_head = blockIdx.y;
  const int seq = blockIdx.z;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int group = params.num_q_heads / params.num_kv_heads;
  const int* block_table =
      params.block_tables + static_cast<int64_t>(seq) * params.block_table_stride;
  const kvcache::KvLayout layout = params.layout;
  const int chunk_begin = split * params.kv_chunk_size;
  // The block-table entry of the warp's i-th tile (chunk tile warp + i * kWarps).
  auto tile_block = [&](int i) {
    const int tile_start = chunk_begin + (warp + i * Traits::kWarps) * kTileN;
    return block_table[min(tile_start / layout.block_size, params.block_table_stride - 1)];
  };
  const int q_begin = params.query_start[seq];
  const int q_end = params.query_start[seq + 1];
  const int kv_len = params.kv_lens[seq];
  int prologue_blocks[kStages - 1] = {};
  if constexpr (kEarlyLoads) {
#pragma unroll
    for (int i = 0; i < kStages - 1; ++i) prologue_blocks[i] = tile_block(i);
  }
  const int num_rows = (q_end - q_begin) * group;
  // Larger sequences belong to flash prefill. The same for every block of a cluster (one
  // sequence), so no block waits at a cluster barrier for one that left.
  if (num_rows == 0 || num_rows > kRows) return;
  int kv_end = kv_len;
  if constexpr (!kEarlyLoads) {
    kv_end = min(kv_len, params.positions[q_begin + (num_rows - 1) / group] + 1);
  }
  const int chunk_end = min(kv_end, chunk_begin + params.kv_chunk_size);
  const bool split_output = !kCluster && params.num_splits > 1;

  // Where row r's partial result goes: [token][head][split].
  auto partial_index = [&](int row) {
    const int token = q_begin + row / group;
    const int head = kv_head * group + row % group;
    return (static_cast<int64_t>(token) * params.num_q_heads + head) * params.num_splits + split;
  };
  auto* merge_o = reinterpret_cast<float*>(smem_pipeline);  // [warp][row][D]
  float* merge_max = merge_o + Traits::kWarps * kRows * D;  // [warp][row]
  float* merge_sum = merge_max + Traits::kWarps * kRows;    // [warp][row]
  // The cluster merge's area (pull: O_c [row][D] and lse_c [row] of this block; push: the pieces
  // and lse_c received from every split).
  auto* exchange = reinterpret_cast<float*>(shared_raw + Traits::kSharedBytes);
  const int num_pieces = num_rows * (D / 4);
  const int pieces_per_block = (num_pieces + params.num_splits - 1) / params.num_splits;
  auto* received_o = reinterpret_cast<float4*>(exchange);  // push: [split][pieces_per_block]
  float* received_lse =
      exchange + (Traits::kPieces + kFlashDecodeMaxClusterSplits) * 4;  // push: [split][row]

  // The cluster merge, once this block's result is in place (pull) or about to be sent (push).
  // send(row, column, o) gives this block's O_c value; lse(row) its lse_c. An empty chunk sends only
  // lse_c = -inf.
  auto merge_in_cluster = [&](bool empty, auto&& lse_of_row, auto&& o4_of_piece) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const cg::cluster_group cluster = cg::this_cluster();
    const int rank = split;  // the cluster spans the splits along x
    if constexpr (kMerge == DecodeMerge::kClusterPush) {
      cluster.barrier_wait();  // every block of the cluster runs
      for (int index = threadIdx.x; index < num_rows * params.num_splits;
           index += Traits::kThreads) {
        const int row = index % num_rows;
        const int target = index / num_rows;
        *cluster.map_shared_rank(received_lse + split * kRows + row, target) =
            empty ? -INFINITY : lse_of_row(row);
      }
      if (!empty) {
        for (int piece = threadIdx.x; piece < num_pieces; piece += Traits::kThreads) {
          const int target = piece % params.num_splits;
          *cluster.map_shared_rank(
              received_o + split * pieces_per_block + piece / params.num_splits, target) =
              o4_of_piece(piece);
        }
      }
      cluster.sync();  // the pieces are in place (release / acquire across the cluster)
      CombinePieces<Traits>(
          params, rank, q_begin, kv_head, group, num_rows,
          [&](int c, int row) { return received_lse[c * kRows + row]; },
          [&](int c, int piece, int, int) {
            return received_o[c * pieces_per_block + piece / params.num_splits];
          });
    } else {
      float* exchange_o = exchange;                 // [row][D]
      float* exchange_lse = exchange + kRows * D;   // [row]
      if (empty) {
        for (int row = threadIdx.x; row < num_rows; row += Traits::kThreads)
          exchange_lse[row] = -INFINITY;
      } else {
        for (int piece = threadIdx.x; piece < num_pieces; piece += Traits::kThreads) {
          *reinterpret_cast<float4*>(exchange_o + piece * 4) = o4_of_piece(piece);
          if (piece % (D / 4) == 0) exchange_lse[piece / (D / 4)] = lse_of_row(piece / (D / 4));
        }
      }
      cluster.sync();  // every block's O_c and lse_c are written
      CombinePieces<Traits>(
          params, rank, q_begin, kv_head, group, num_rows,
          [&](int c, int row) { return cluster.map_shared_rank(exchange_lse, c)[row]; },
          [&](int c, int, int row, int column) {
            return *reinterpret_cast<const float4*>(cluster.map_shared_rank(exchange_o, c) +
                                                    row * D + column);
          });
      cluster.sync();  // no block exits while another still reads its shared memory
    }
#endif
  };

  if (chunk_begin >= chunk_end) {  // nothing to attend to in this chunk: weight 0 in the merge
    if constexpr (kCluster) {
      merge_in_cluster(
          true, [](int) { return -INFINITY; },
          [](int) { return make_float4(0.f, 0.f, 0.f, 0.f); });
    } else if (split_output) {
      for (int index = threadIdx.x; index < num_rows * D; index += Traits::kThreads) {
        const int row = index / D;
        params.partial_out[partial_index(row) * D + index % D] = 0.f;
        if (index % D == 0) params.partial_lse[partial_index(row)] = -INFINITY;
      }
    }
    return;
  }

  for (int index = threadIdx.x; index < kRows * kChunks; index += Traits::kThreads) {
    const int row = index / kChunks;
    const int chunk = index % kChunks;
    const bool valid = row < num_rows;
    const __nv_bfloat16* source = params.q;
    if (valid) {
      source += (q_begin + row / group) * params.q_row_stride +
                (kv_head * group + row % group) * D + chunk * 8;
    }
    CpAsync16(smem_q + SwizzledOffset<D>(row, chunk * 8), source, valid);
  }
  CpAsyncCommit();  // Q is the oldest group: waited for after the K/V prologue is in flight

  __nv_bfloat16* warp_pipeline = smem_pipeline + warp * kStages * Traits::kStageElements;
  const int num_tiles = (chunk_end - chunk_begin + kTileN - 1) / kTileN;
  const int my_tiles =
      num_tiles > warp ? (num_tiles - warp + Traits::kWarps - 1) / Traits::kWarps : 0;
  // The warp's i-th tile is chunk tile warp + i * kWarps, the block-table entry of its first
  // position `first_block`; stage s holds K then V.
  auto load_tile = [&](int i, int first_block) {
    const int tile_start = chunk_begin + (warp + i * Traits::kWarps) * kTileN;
    __nv_bfloat16* stage_k = warp_pipeline + (i % kStages) * Traits::kStageElements;
    __nv_bfloat16* stage_v = stage_k + kTileN * D;
    // Usually the whole tile lies in one KV block: one block-table read (the same address for every
    // lane) instead of one division and one dependent read per 16-byte copy.
    const int first_slot = tile_start % layout.block_size;
    const bool one_block = first_slot + kTileN <= layout.block_size;
    const int64_t tile_base =
        one_block ? layout.offset_in_layer(first_block, kv_head, first_slot, 0) : 0;
#pragma unroll
    for (int index = lane; index < kTileN * kChunks; index += 32) {
      const int r = index / kChunks;
      const int chunk = index % kChunks;
      const int position = tile_start + r;
      const bool valid = position < chunk_end;
      int64_t offset = 0;
      if (valid) {
        if (one_block) {
          offset = tile_base + r * D + chunk * 8;
        } else {
          const kvcache::PagedPosition paged =
              kvcache::LocatePosition(block_table, layout.block_size, position);
          offset = layout.offset_in_layer(paged.block, kv_head, paged.slot, chunk * 8);
        }
      }
      CpAsync16(stage_k + SwizzledOffset<D>(r, chunk * 8), params.k_cache + offset, valid);
      CpAsync16(stage_v + SwizzledOffset<D>(r, chunk * 8), params.v_cache + offset, valid);
    }
  };

  int row_position[1][2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = (lane >> 2) + half * 8;
    row_position[0][half] = row < num_rows ? params.positions[q_begin + row / group] : -1;
  }

  WarpFlashState<D, kTileN, 1> state;
  state.Init();
  const float scale_log2 = params.softmax_scale * 1.4426950408889634f;

#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i < my_tiles) {
      if constexpr (kEarlyLoads) {
        load_tile(i, prologue_blocks[i]);
      } else {
        load_tile(i, tile_block(i));
      }
    }
    CpAsyncCommit();
  }
  CpAsyncWait<kStages - 1>();  // this thread's Q copies
  __syncthreads();             // everyone's Q copies
  for (int i = 0; i < my_tiles; ++i) {
    if (i + kStages - 1 < my_tiles) load_tile(i + kStages - 1, tile_block(i + kStages - 1));
    CpAsyncCommit();
    CpAsyncWait<kStages - 1>();
    __syncwarp();
    const int tile_start = chunk_begin + (warp + i * Traits::kWarps) * kTileN;
    const __nv_bfloat16* stage_k = warp_pipeline + (i % kStages) * Traits::kStageElements;
    state.template Step<true>(smem_q, 0, stage_k, stage_k + kTileN * D, 0, scale_log2,
                              [&](int, int half, int column) {
                                const int position = tile_start + column;
                                return position <= row_position[0][half] && position < chunk_end;
                              });
    __syncwarp();
  }
  CpAsyncWait<0>();
  state.Finish();

  // Merge the warps: each writes its unnormalised O, m and l to shared memory (the pipeline area).
  __syncthreads();
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = (lane >> 2) + half * 8;
    const float sum = state.row_sum[0][half];
#pragma unroll
    for (int j = 0; j < WarpFlashState<D, kTileN, 1>::kOutTiles; ++j) {
      float* destination = merge_o + (warp * kRows + row) * D + j * 8 + (lane & 3) * 2;
      destination[0] = state.o[0][j][half * 2];
      destination[1] = state.o[0][j][half * 2 + 1];
    }
    if ((lane & 3) == 0) {
      merge_max[warp * kRows + row] = state.row_max[0][half];
      merge_sum[warp * kRows + row] = sum;
    }
  }
  __syncthreads();

  // The block's result for row r: O_c = sum_w 2^(m_w - m) O_w / sum_w 2^(m_w - m) l_w with
  // m = max_w m_w, and lse_c = m + log2(sum_w 2^(m_w - m) l_w) (-inf when no position was visible).
  auto row_max = [&](int row) {
    float max_all = -INFINITY;
#pragma unroll
    for (int w = 0; w < Traits::kWarps; ++w) max_all = fmaxf(max_all, merge_max[w * kRows + row]);
    return max_all;
  };
  auto row_sum = [&](int row, float max_all) {
    float sum = 0.f;
    if (max_all != -INFINITY) {
#pragma unroll
      for (int w = 0; w < Traits::kWarps; ++w)
        sum += exp2f(merge_max[w * kRows + row] - max_all) * merge_sum[w * kRows + row];
    }
    return sum;
  };
  if constexpr (kCluster) {
    merge_in_cluster(
        false,
        [&](int row) {
          const float max_all = row_max(row);
          const float sum = row_sum(row, max_all);
          return sum > 0.f ? max_all + log2f(sum) : -INFINITY;
        },
        [&](int piece) {
          const int row = piece / (D / 4);
          const int column = piece % (D / 4) * 4;
          const float max_all = row_max(row);
          float value[4] = {0.f, 0.f, 0.f, 0.f};
          float sum = 0.f;
          if (max_all != -INFINITY) {
#pragma unroll
            for (int w = 0; w < Traits::kWarps; ++w) {
              const float weight = exp2f(merge_max[w * kRows + row] - max_all);
              sum += weight * merge_sum[w * kRows + row];
              const float4 o =
                  *reinterpret_cast<const float4*>(merge_o + (w * kRows + row) * D + column);
              value[0] += weight * o.x;
              value[1] += weight * o.y;
              value[2] += weight * o.z;
              value[3] += weight * o.w;
            }
          }
          const float inverse = sum > 0.f ? 1.f / sum : 0.f;
          return make_float4(value[0] * inverse, value[1] * inverse, value[2] * inverse,
                             value[3] * inverse);
        });
  } else {
    for (int index = threadIdx.x; index < num_rows * D; index += Traits::kThreads) {
      const int row = index / D;
      const int column = index % D;
      const float max_all = row_max(row);
      float sum = 0.f;
      float value = 0.f;
      if (max_all != -INFINITY) {
#pragma unroll
        for (int w = 0; w < Traits::kWarps; ++w) {
          const float weight = exp2f(merge_max[w * kRows + row] - max_all);
          sum += weight * merge_sum[w * kRows + row];
          value += weight * merge_o[(w * kRows + row) * D + column];
        }
      }
      const float normalised = sum > 0.f ? value / sum : 0.f;
      if (split_output) {
        params.partial_out[partial_index(row) * D + column] = normalised;
        if (column == 0) {
          params.partial_lse[partial_index(row)] = sum > 0.f ? max_all + log2f(sum) : -INFINITY;
        }
      } else {
        params.out[(q_begin + row / group) * params.out_row_stride +
                   (kv_head * group + row % group) * D + column] = __float2bfloat16_rn(normalised);
      }
    }
  }
}

// $LLM_CUDA_DECODE_VARIANT (measurement only, read once): "pull" takes the pull cluster merge,
// "late" the old load order, "pull_late" both.
int FlashDecodeVariant();

template <typename Traits, DecodeMerge kMerge, bool kEarlyLoads>
absl::Status LaunchFlashDecodeKernel(const PagedAttentionParams& params, cudaStream_t stream) {
  auto* kernel = FlashDecodeKernel<Traits, kMerge, kEarlyLoads>;
  constexpr int kBytes =
      kMerge == DecodeMerge::kDirect ? Traits::kSharedBytes : Traits::kClusterSharedBytes;
  LLM_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes));
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(params.num_splits, params.num_kv_heads, params.num_seqs);
  config.blockDim = dim3(Traits::kThreads);
  config.dynamicSmemBytes = kBytes;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeClusterDimension;
  attribute[0].val.clusterDim.x = static_cast<unsigned>(params.num_splits);
  attribute[0].val.clusterDim.y = 1;
  attribute[0].val.clusterDim.z = 1;
  config.attrs = attribute;
  config.numAttrs = 0;
  if constexpr (kMerge != DecodeMerge::kDirect) {
    if (params.num_splits > 8) {  // beyond the portable cluster size
      LLM_CUDA_CHECK(
          cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    }
    config.numAttrs = 1;
  }
  LLM_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, params));
  LLM_CUDA_CHECK_LAUNCH(FlashDecodeKernel);
  return absl::OkStatus();
}

// Launches the decode blocks of `params` with the traits' tiling; with num_splits > 1 and
// merge_in_cluster the splits merge in clusters, else the caller launches MergeSplits
// (LaunchFlashDecode does).
template <typename Traits>
absl::Status LaunchFlashDecodeWithTraits(const PagedAttentionParams& params, cudaStream_t stream) {
  if (params.num_seqs == 0) return absl::OkStatus();
  if (params.num_seqs > 65535 || params.num_kv_heads > 65535) {  // grid z / y limits
    return absl::InvalidArgumentError("flash decode: more than 65535 sequences or kv heads");
  }
  const bool cluster = params.merge_in_cluster && params.num_splits > 1;
  const int variant = FlashDecodeVariant();
  const bool pull = (variant & 1) != 0;
  const bool late = (variant & 2) != 0;
  if (!cluster) {
    return late ? LaunchFlashDecodeKernel<Traits, DecodeMerge::kDirect, false>(params, stream)
                : LaunchFlashDecodeKernel<Traits, DecodeMerge::kDirect, true>(params, stream);
  }
  if (pull) {
    return late ? LaunchFlashDecodeKernel<Traits, DecodeMerge::kClusterPull, false>(params, stream)
                : LaunchFlashDecodeKernel<Traits, DecodeMerge::kClusterPull, true>(params, stream);
  }
  return late ? LaunchFlashDecodeKernel<Traits, DecodeMerge::kClusterPush, false>(params, stream)
              : LaunchFlashDecodeKernel<Traits, DecodeMerge::kClusterPush, true>(params, stream);
}

absl::Status LaunchFlashDecodeHeadDim64(const PagedAttentionParams& params, cudaStream_t stream);
absl::Status LaunchFlashDecodeHeadDim128(const PagedAttentionParams& params, cudaStream_t stream);
absl::Status LaunchMergeSplits(const PagedAttentionParams& params, cudaStream_t stream);

}  // namespace llm::cuda
