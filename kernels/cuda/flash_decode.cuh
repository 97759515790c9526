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
//  * merge_in_cluster (ChooseDecodeSplits sets it for 2..8 chunks when every block has an SM to
//    itself; compute capability 9.0): the chunks of one (sequence, kv head) form a thread-block
//    cluster of num_splits blocks; each block leaves (O_c, lse_c) in its own shared memory (in the
//    pipeline's bytes, so no occupancy is lost), and after a cluster barrier block r combines the
//    output pieces r, r + num_splits, ... (4 columns each), reading every block's (O_c, lse_c)
//    through distributed shared memory, and writes bf16 output; a second barrier keeps each block's
//    shared memory alive until the others have read it. No fp32 partials, no second kernel;
//  * otherwise (long contexts: 16 chunks for one 32k sequence; fuller grids, where clusters waited
//    for room): fp32 O_c and lse_c per (token, head, chunk) go to partial_out / partial_lse and
//    MergeSplitsKernel (flash_decode_merge.cu) combines them.
// Measured on an H100 (docs/perf/2026-11-24-h100-session3/): at B1 on TinyLlama's shape (8
// chunks of 64 positions) one cluster launch takes 7.7 us against 6.2 + 3.5 us for the two
// kernels (Nsight Compute); pushing the pieces into the combining blocks' shared memory instead
// (one barrier, a separate receive area) measured no faster (7.9 us) and was dropped.
//
// Folded RoPE (params.rope_inv_freq; decode steps of one token per sequence, Backend::
// RopeAppendAttention): the kernel takes q, k and v of the step's token straight from the qkv
// product. Every block takes the token's RMS scale (a folded norm; BlockInverseRms, the same bits
// as RopeAppendKv's) and rotates its group's q rows in shared memory; the warp whose tile holds the
// token's position loads that row's k and v pairs early, and after the tile's copies land it writes
// the rotated k and scaled v over the stale row (and to the cache for later steps). The numbers are
// RopeAppendKv's (rope_pair.cuh), so the result is the unfused pair's; one launch fewer per layer.
// The backend folds only when the attention runs unsplit: with split KV the folded launch is
// slower than the pair (CudaBackendOptions::fold_rope_into_split_decode).
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
#include "kernels/cuda/flash_decode_trace.h"
#include "kernels/cuda/grid_dependency.cuh"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/rope_pair.cuh"
#include "kernels/cuda/row_rms.cuh"

// A diagnostic build (CMake option LLM_CUDA_DECODE_PHASE_TRACE) compiles the phase trace below into
// the production kernels, so that it can be read from a graphed decode step (llm-bench-kernels
// --sections decode_step with $LLM_BENCH_DECODE_PHASE_TRACE).
#ifndef LLM_FLASH_DECODE_PHASE_TRACE
#define LLM_FLASH_DECODE_PHASE_TRACE 0
#endif

namespace llm::cuda {

template <int kHeadDim_, int kWarps_, int kTileN_, int kStages_, bool kTableWindow_ = true>
struct FlashDecodeTraits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kTileN = kTileN_;
  static constexpr int kStages = kStages_;
  // Each lane holds the block-table entry of one of the warp's next 32 tiles (one load per 32
  // tiles, handed out by shuffle), instead of a dependent block-table read before every tile's
  // copies.
  static constexpr bool kTableWindow = kTableWindow_;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRows = 16;
  static constexpr int kChunksPerRow = kHeadDim / 8;
  static constexpr int kStageElements = 2 * kTileN * kHeadDim;  // K then V
  static constexpr int kPipelineBytes = kWarps * kStages * kStageElements * 2;
  static constexpr int kMergeBytes = kWarps * kRows * (kHeadDim + 2) * 4;
  // The cluster merge's exchange area after the warp-merge area: the block's O_c [row][D] and
  // lse_c [row]. Only this block writes it, after its own K/V loop, so it may share the pipeline's
  // bytes; it fits there at both head dims and costs no occupancy.
  static constexpr int kExchangeBytes = kRows * (kHeadDim + 1) * 4;
  static constexpr int kTailBytes = kMergeBytes + kExchangeBytes;
  static constexpr int kSharedBytes =
      kRows * kHeadDim * 2 + (kPipelineBytes > kTailBytes ? kPipelineBytes : kTailBytes);
  static_assert(kMergeBytes % 16 == 0, "the exchange area is read with 16-byte loads");
  // A diagnostic (bench/bench_kernels.cu's traced variant derives traits that set it, and the
  // LLM_CUDA_DECODE_PHASE_TRACE build sets it for all): thread 0 of each block writes %globaltimer
  // at the phase ends below to flash_decode_phase_trace.
  static constexpr bool kPhaseTrace = LLM_FLASH_DECODE_PHASE_TRACE != 0;
};

// Phase trace of a kPhaseTrace instantiation: the layout in flash_decode_trace.h.
static __device__ unsigned long long* flash_decode_phase_trace = nullptr;

template <typename Traits>
__device__ __forceinline__ void TracePhase(int phase) {
  if constexpr (Traits::kPhaseTrace) {
    if (threadIdx.x != 0 || flash_decode_phase_trace == nullptr) return;
    unsigned long long now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    const int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    flash_decode_phase_trace[block * kFlashDecodePhases + phase] = now;
    if (phase == 0) {
      unsigned sm;
      asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
      flash_decode_phase_trace[block * kFlashDecodePhases + kFlashDecodePhases - 1] = sm;
    }
  }
}

// The cluster merge (see the header comment): called by every block of the cluster after it wrote
// its rows' O_c to exchange_o [row][D] and lse_c to exchange_lse [row] of its own shared memory.
template <typename Traits>
__device__ __forceinline__ void MergeSplitsInCluster(const PagedAttentionParams& params,
                                                     const float* exchange_o,
                                                     const float* exchange_lse, int q_begin,
                                                     int kv_head, int group, int num_rows) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int D = Traits::kHeadDim;
  constexpr int kVector = 4;  // columns per element: one 16-byte load per split
  namespace cg = cooperative_groups;
  const cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();  // every block's exchange area is written (release / acquire across the cluster)
  TracePhase<Traits>(6);
  const int num_splits = params.num_splits;  // == the cluster's size
  const int rank = static_cast<int>(cluster.block_rank());
  const int elements = num_rows * (D / kVector);
  // Element e goes to block e % num_splits, so each block takes an equal share even of one row.
  for (int element = rank + num_splits * threadIdx.x; element < elements;
       element += num_splits * Traits::kThreads) {
    const int row = element / (D / kVector);
    const int column = element % (D / kVector) * kVector;
    float lse[kFlashDecodeMaxClusterSplits];
    float lse_max = -INFINITY;
#pragma unroll
    for (int c = 0; c < kFlashDecodeMaxClusterSplits; ++c) {
      lse[c] = c < num_splits ? cluster.map_shared_rank(exchange_lse, c)[row] : -INFINITY;
      lse_max = fmaxf(lse_max, lse[c]);
    }
    float4 sum_o = make_float4(0.f, 0.f, 0.f, 0.f);
    float sum_weight = 0.f;
    if (lse_max != -INFINITY) {
#pragma unroll
      for (int c = 0; c < kFlashDecodeMaxClusterSplits; ++c) {
        if (lse[c] == -INFINITY) continue;  // weight 0; an empty chunk never wrote its O_c
        const float weight = exp2f(lse[c] - lse_max);
        const float4 o = *reinterpret_cast<const float4*>(cluster.map_shared_rank(exchange_o, c) +
                                                          row * D + column);
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
  // No block exits while another still reads its shared memory. The reads above are complete
  // (their values are used) before this thread arrives, so the arrival needs no release: a
  // relaxed one skips the cluster-scope fence (a release arrival cost ~0.35 us in the ninth
  // session's multicast GEMM).
  // clang-format off
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\nbarrier.cluster.wait.aligned;\n" :::
                   "memory");
  // clang-format on
#else
  __trap();  // merge_in_cluster is accepted only on compute capability >= 9.0
#endif
}

// kClusterMerge: launched in clusters of num_splits blocks along x; the splits merge in the
// cluster (MergeSplitsInCluster) instead of through partial_out / partial_lse.
// kRope: RoPE + KV append folded in (params.rope_inv_freq; one query token per sequence): see
// "Folded RoPE" in the header comment.
template <typename Traits, bool kClusterMerge, bool kRope>
__global__ void __launch_bounds__(Traits::kThreads)
    FlashDecodeKernel(const PagedAttentionParams params) {
  constexpr int D = Traits::kHeadDim;
  constexpr int kTileN = Traits::kTileN;
  constexpr int kStages = Traits::kStages;
  constexpr int kChunks = Traits::kChunksPerRow;
  constexpr int kRows = Traits::kRows;
  extern __shared__ __align__(128) unsigned char shared_raw[];
  auto* smem_q = reinterpret_cast<__nv_bfloat16*>(shared_raw);
  __nv_bfloat16* smem_pipeline = smem_q + kRows * D;

  // Lets the merge kernel (launched with programmatic stream serialization) start its blocks
  // early; it waits in griddepcontrol.wait until this grid has finished and flushed its writes.
  LetDependentsStart();
  TracePhase<Traits>(0);
  const int split = blockIdx.x;
  const int kv_head = blockIdx.y;
  const int seq = blockIdx.z;
  const int group = params.num_q_heads / params.num_kv_heads;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int* block_table =
      params.block_tables + static_cast<int64_t>(seq) * params.block_table_stride;
  const kvcache::KvLayout layout = params.layout;
  const int chunk_begin = split * params.kv_chunk_size;
  // Issued together, none waiting on another: the sequence's query range and KV length, and the
  // block-table entries of the warp's first 32 tiles (lane t: tile t; the index needs only the
  // chunk's start, the row's stride keeps it in bounds). The K/V copies then wait on one round
  // trip, not three (query_start -> positions -> block table).
  const int q_begin = params.query_start[seq];
  const int q_end = params.query_start[seq + 1];
  const int kv_len = params.kv_lens[seq];
  int table_entry = 0;
  if constexpr (Traits::kTableWindow) {
    const int start = chunk_begin + (warp + lane * Traits::kWarps) * kTileN;
    const int index = start / layout.block_size;
    if (start < chunk_begin + params.kv_chunk_size && index < params.block_table_stride) {
      table_entry = block_table[index];
    }
  }
  const int num_rows = (q_end - q_begin) * group;
  // Larger sequences belong to flash prefill. The same for every block of a cluster (one
  // sequence), so no block waits at a cluster barrier for one that left.
  if (num_rows == 0 || num_rows > kRows) return;
  const int last_position = params.positions[q_begin + (num_rows - 1) / group];
  if constexpr (Traits::kPhaseTrace) {
    if (last_position < 0) return;  // makes the trace wait for the load
  }
  TracePhase<Traits>(1);
  // Copies cover [chunk_begin, load_end) (kv_len known); the causal end, chunk_end, needs the last
  // query position and only masks (the same unless kv_len > last position + 1).
  const int load_end = min(kv_len, chunk_begin + params.kv_chunk_size);
  const int chunk_end = min(min(kv_len, last_position + 1), chunk_begin + params.kv_chunk_size);
  const bool split_output = !kClusterMerge && params.num_splits > 1;

  // Where row r's partial result goes: [token][head][split].
  auto partial_index = [&](int row) {
    const int token = q_begin + row / group;
    const int head = kv_head * group + row % group;
    return (static_cast<int64_t>(token) * params.num_q_heads + head) * params.num_splits + split;
  };
  auto* merge_o = reinterpret_cast<float*>(smem_pipeline);  // [warp][row][D]
  float* merge_max = merge_o + Traits::kWarps * kRows * D;  // [warp][row]
  float* merge_sum = merge_max + Traits::kWarps * kRows;    // [warp][row]
  float* exchange_o = reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(smem_pipeline) +
                                               Traits::kMergeBytes);  // [row][D]
  float* exchange_lse = exchange_o + kRows * D;                       // [row]
  auto empty_chunk = [&] {  // nothing to attend to in this chunk: weight 0 in the merge
    if constexpr (kClusterMerge) {
      for (int row = threadIdx.x; row < num_rows; row += Traits::kThreads)
        exchange_lse[row] = -INFINITY;
      MergeSplitsInCluster<Traits>(params, exchange_o, exchange_lse, q_begin, kv_head, group,
                                   num_rows);
    } else if (split_output) {
      for (int index = threadIdx.x; index < num_rows * D; index += Traits::kThreads) {
        const int row = index / D;
        params.partial_out[partial_index(row) * D + index % D] = 0.f;
        if (index % D == 0) params.partial_lse[partial_index(row)] = -INFINITY;
      }
    }
  };
  if (chunk_begin >= load_end) {
    empty_chunk();
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

  const int num_tiles = (load_end - chunk_begin + kTileN - 1) / kTileN;
  const int my_tiles =
      num_tiles > warp ? (num_tiles - warp + Traits::kWarps - 1) / Traits::kWarps : 0;
  // The warp's i-th tile is chunk tile warp + i * kWarps; stage s holds K then V.
  int table_window = 0;  // the warp's tiles [32 * table_window, + 32) have their entries in lanes
  auto table_entry_of_tile = [&](int i) {
    if (i / 32 != table_window) {
      table_window = i / 32;
      const int tile = table_window * 32 + lane;
      const int start = chunk_begin + (warp + tile * Traits::kWarps) * kTileN;
      table_entry = tile < my_tiles ? block_table[start / layout.block_size] : 0;
    }
    return __shfl_sync(0xffffffffu, table_entry, i % 32);
  };
  auto load_tile = [&](int i) {
    const int tile_start = chunk_begin + (warp + i * Traits::kWarps) * kTileN;
    __nv_bfloat16* stage_k = warp_pipeline + (i % kStages) * Traits::kStageElements;
    __nv_bfloat16* stage_v = stage_k + kTileN * D;
    // Usually the whole tile lies in one KV block: one block-table read (the same address for every
    // lane) instead of one division and one dependent read per 16-byte copy.
    const int first_index = tile_start / layout.block_size;
    const int first_slot = tile_start - first_index * layout.block_size;
    const bool one_block = first_slot + kTileN <= layout.block_size;
    int first_block = 0;
    if constexpr (Traits::kTableWindow) {
      first_block = table_entry_of_tile(i);  // every lane: the shuffle needs the whole warp
    } else if (one_block) {
      first_block = block_table[first_index];
    }
    const int64_t tile_base =
        one_block ? layout.offset_in_layer(first_block, kv_head, first_slot, 0) : 0;
#pragma unroll
    for (int index = lane; index < kTileN * kChunks; index += 32) {
      const int r = index / kChunks;
      const int chunk = index % kChunks;
      const int position = tile_start + r;
      const bool valid = position < load_end;
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
    if (i < my_tiles) load_tile(i);
    CpAsyncCommit();
  }

  // Folded RoPE: the token's scale (every thread), and, in the warp whose tile holds the token's
  // position, that row's unrotated k and v pairs (i, i + D/2), i = lane + 32 j, and its slot. They
  // are used only at that tile, so they stay as loaded until then: a use here (a conversion, a
  // test of the slot) would wait for loads that queue behind this warp's K/V copies.
  constexpr int kPairsPerLane = kRope ? D / 64 : 1;
  float scale = 1.f;
  int new_iteration = -1, new_row = 0, new_slot = -1;
  __nv_bfloat16 new_k[kPairsPerLane][2], new_v[kPairsPerLane][2];
  if constexpr (kRope) {
    if (params.rope_scale_rows_by != nullptr) {
      scale = BlockInverseRms(
          params.rope_scale_rows_by + static_cast<int64_t>(q_begin) * params.rope_scale_hidden,
          params.rope_scale_hidden, params.rope_scale_eps);
    }
    const int offset = last_position - chunk_begin;
    if (offset >= 0 && last_position < load_end && (offset / kTileN) % Traits::kWarps == warp) {
      new_slot = params.slot_mapping[q_begin];
      new_iteration = offset / kTileN / Traits::kWarps;
      new_row = offset % kTileN;
      const __nv_bfloat16* k_row = params.q + static_cast<int64_t>(q_begin) * params.q_row_stride +
                                   (params.num_q_heads + kv_head) * D;
      const __nv_bfloat16* v_row = k_row + params.num_kv_heads * D;
#pragma unroll
      for (int j = 0; j < kPairsPerLane; ++j) {
        const int i = lane + 32 * j;
        new_k[j][0] = k_row[i];
        new_k[j][1] = k_row[i + D / 2];
        new_v[j][0] = v_row[i];
        new_v[j][1] = v_row[i + D / 2];
      }
    }
  }

  if (chunk_begin >= chunk_end) {  // all of the chunk lies past the last query position
    CpAsyncWait<0>();              // the copies land in the area the empty chunk's merge writes
    __syncthreads();
    empty_chunk();
    return;
  }
  CpAsyncWait<kStages - 1>();  // this thread's Q copies
  __syncthreads();             // everyone's Q copies
  if constexpr (kRope) {  // scale and rotate the group's q rows in place (one token: its position)
    for (int index = threadIdx.x; index < num_rows * (D / 2); index += Traits::kThreads) {
      const int row = index / (D / 2);
      const int i = index % (D / 2);
      __nv_bfloat16* x0 = smem_q + SwizzledOffset<D>(row, i);
      __nv_bfloat16* x1 = smem_q + SwizzledOffset<D>(row, i + D / 2);
      RotatePair(__bfloat162float(*x0) * scale, __bfloat162float(*x1) * scale, last_position,
                 params.rope_inv_freq[i], params.rope_attention_scaling, *x0, *x1);
    }
    __syncthreads();
  }
  for (int i = 0; i < my_tiles; ++i) {
    if (i + kStages - 1 < my_tiles) load_tile(i + kStages - 1);
    CpAsyncCommit();
    CpAsyncWait<kStages - 1>();
    __syncwarp();
    if (i == 0) TracePhase<Traits>(2);
    const int tile_start = chunk_begin + (warp + i * Traits::kWarps) * kTileN;
    const __nv_bfloat16* stage_k = warp_pipeline + (i % kStages) * Traits::kStageElements;
    if constexpr (kRope) {
      // The token's own row: its k and v as RopeAppendKv would have stored them, into the cache
      // (kept for later steps) and over the stale bytes this tile copied from there.
      if (i == new_iteration && new_slot >= 0) {  // new_iteration: from registers
        auto* tile_k = warp_pipeline + (i % kStages) * Traits::kStageElements;
        auto* tile_v = tile_k + kTileN * D;
        const int block = new_slot / layout.block_size;
        const int64_t base =
            layout.offset_in_layer(block, kv_head, new_slot - block * layout.block_size, 0);
        // The pool is writable; only this append writes it from an attention kernel.
        auto* k_cache = const_cast<__nv_bfloat16*>(params.k_cache);
        auto* v_cache = const_cast<__nv_bfloat16*>(params.v_cache);
#pragma unroll
        for (int j = 0; j < kPairsPerLane; ++j) {
          const int c = lane + 32 * j;
          __nv_bfloat16 k0, k1;
          RotatePair(__bfloat162float(new_k[j][0]) * scale, __bfloat162float(new_k[j][1]) * scale,
                     last_position, params.rope_inv_freq[c], params.rope_attention_scaling, k0, k1);
          const __nv_bfloat16 v0 = __float2bfloat16_rn(__bfloat162float(new_v[j][0]) * scale);
          const __nv_bfloat16 v1 = __float2bfloat16_rn(__bfloat162float(new_v[j][1]) * scale);
          tile_k[SwizzledOffset<D>(new_row, c)] = k0;
          tile_k[SwizzledOffset<D>(new_row, c + D / 2)] = k1;
          tile_v[SwizzledOffset<D>(new_row, c)] = v0;
          tile_v[SwizzledOffset<D>(new_row, c + D / 2)] = v1;
          k_cache[base + c] = k0;
          k_cache[base + c + D / 2] = k1;
          v_cache[base + c] = v0;
          v_cache[base + c + D / 2] = v1;
        }
        __syncwarp();
      }
    }
    state.template Step<true>(smem_q, 0, stage_k, stage_k + kTileN * D, 0, scale_log2,
                              [&](int, int half, int column) {
                                const int position = tile_start + column;
                                return position <= row_position[0][half] && position < chunk_end;
                              });
    __syncwarp();
  }
  CpAsyncWait<0>();
  state.Finish();
  TracePhase<Traits>(3);

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
  TracePhase<Traits>(4);

  // Four adjacent columns per thread (one 16-byte shared load per warp): with 8 rows x 64 columns
  // every thread of a 4-warp block merges once instead of four times in a row, which the phase
  // trace showed as ~1.4 us of the launch. The sums run in the same order as per column, so the
  // results are the per-column merge's to the bit.
  constexpr int kVector = 4;
  for (int index = threadIdx.x; index < num_rows * (D / kVector); index += Traits::kThreads) {
    const int row = index / (D / kVector);
    const int column = index % (D / kVector) * kVector;
    float max_all = -INFINITY;
#pragma unroll
    for (int w = 0; w < Traits::kWarps; ++w) max_all = fmaxf(max_all, merge_max[w * kRows + row]);
    float sum = 0.f;
    float value[kVector] = {0.f, 0.f, 0.f, 0.f};
    if (max_all != -INFINITY) {
#pragma unroll
      for (int w = 0; w < Traits::kWarps; ++w) {
        const float weight = exp2f(merge_max[w * kRows + row] - max_all);
        sum += weight * merge_sum[w * kRows + row];
        const float4 o = *reinterpret_cast<const float4*>(merge_o + (w * kRows + row) * D + column);
        value[0] += weight * o.x;
        value[1] += weight * o.y;
        value[2] += weight * o.z;
        value[3] += weight * o.w;
      }
    }
    float normalised[kVector];
#pragma unroll
    for (int c = 0; c < kVector; ++c) normalised[c] = sum > 0.f ? value[c] / sum : 0.f;
    const float lse = sum > 0.f ? max_all + log2f(sum) : -INFINITY;
    if constexpr (kClusterMerge) {
      *reinterpret_cast<float4*>(exchange_o + row * D + column) =
          make_float4(normalised[0], normalised[1], normalised[2], normalised[3]);
      if (column == 0) exchange_lse[row] = lse;
    } else if (split_output) {
      float* partial = params.partial_out + partial_index(row) * D + column;
#pragma unroll
      for (int c = 0; c < kVector; ++c) partial[c] = normalised[c];
      if (column == 0) params.partial_lse[partial_index(row)] = lse;
    } else {
      __nv_bfloat16* out = params.out + (q_begin + row / group) * params.out_row_stride +
                           (kv_head * group + row % group) * D + column;
#pragma unroll
      for (int c = 0; c < kVector; ++c) out[c] = __float2bfloat16_rn(normalised[c]);
    }
  }
  TracePhase<Traits>(5);
  if constexpr (kClusterMerge) {
    MergeSplitsInCluster<Traits>(params, exchange_o, exchange_lse, q_begin, kv_head, group,
                                 num_rows);
  }
  TracePhase<Traits>(7);
}

// Launches the decode blocks of `params` with the traits' tiling; with num_splits > 1 the merge
// happens in clusters when params.merge_in_cluster, else the caller launches MergeSplits
// (LaunchFlashDecode does).
template <typename Traits, bool kRope>
absl::Status LaunchFlashDecodeKernel(const PagedAttentionParams& params, cudaStream_t stream) {
  if (params.num_seqs == 0) return absl::OkStatus();
  if (params.num_seqs > 65535 || params.num_kv_heads > 65535) {  // grid z / y limits
    return absl::InvalidArgumentError("flash decode: more than 65535 sequences or kv heads");
  }
  const dim3 grid(params.num_splits, params.num_kv_heads, params.num_seqs);
  if (!params.merge_in_cluster || params.num_splits < 2) {
    auto* kernel = FlashDecodeKernel<Traits, false, kRope>;
    LLM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        Traits::kSharedBytes));
    kernel<<<grid, Traits::kThreads, Traits::kSharedBytes, stream>>>(params);
    LLM_CUDA_CHECK_LAUNCH(FlashDecodeKernel);
    return absl::OkStatus();
  }
  auto* kernel = FlashDecodeKernel<Traits, true, kRope>;
  LLM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      Traits::kSharedBytes));
  if (params.num_splits > 8) {  // beyond the portable cluster size
    LLM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  }
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = dim3(Traits::kThreads);
  config.dynamicSmemBytes = Traits::kSharedBytes;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeClusterDimension;
  attribute[0].val.clusterDim.x = static_cast<unsigned>(params.num_splits);
  attribute[0].val.clusterDim.y = 1;
  attribute[0].val.clusterDim.z = 1;
  config.attrs = attribute;
  config.numAttrs = 1;
  LLM_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, params));
  LLM_CUDA_CHECK_LAUNCH(FlashDecodeKernel);
  return absl::OkStatus();
}

template <typename Traits>
absl::Status LaunchFlashDecodeWithTraits(const PagedAttentionParams& params, cudaStream_t stream) {
  return params.rope_inv_freq != nullptr ? LaunchFlashDecodeKernel<Traits, true>(params, stream)
                                         : LaunchFlashDecodeKernel<Traits, false>(params, stream);
}

absl::Status LaunchFlashDecodeHeadDim64(const PagedAttentionParams& params, cudaStream_t stream);
absl::Status LaunchFlashDecodeHeadDim128(const PagedAttentionParams& params, cudaStream_t stream);
absl::Status LaunchMergeSplits(const PagedAttentionParams& params, cudaStream_t stream);

}  // namespace llm::cuda
