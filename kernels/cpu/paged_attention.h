// Causal attention of a ragged batch of query tokens over the paged KV cache, in fp32: the
// reference that the CUDA flash prefill/decode kernels are tested against.
//
// For query token t of sequence s (query_start[s] <= t < query_start[s + 1]) and query head h:
//   kv_head = h / (Hq / Hkv)                                  (grouped-query attention)
//   visible = { p : 0 <= p <= positions[t] and p < kv_lens[s] } (causal by ABSOLUTE position)
//   score_p = scale * q_t,h . K[s, p, kv_head]
//   out[t, h] = sum_p softmax(score)_p * V[s, p, kv_head]
// K[s, p, kv_head] lives in block block_tables[s][p / block_size], slot p % block_size, addressed
// only through kvcache/kv_layout.h. Scores are computed and normalised in fp32 with the row maximum
// subtracted first (plain two-pass softmax; the CUDA kernels use the online form).
// Work is split over (query token, kv head) pairs: the Hq / Hkv query heads of a group walk the
// sequence's pages together, one contiguous block_size x head_dim tile at a time, so each K/V tile
// is loaded once per group rather than once per query head.
#pragma once

#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cpu/thread_pool.h"

namespace llm::cpu {

// qkv: [num_tokens, (Hq + 2 * Hkv) * D] (only the q part is read); out: [num_tokens, Hq * D].
// All pointers in `batch` and `cache` are host memory.
void PagedAttention(ThreadPool& pool, const float* qkv, const AttentionBatch& batch,
                    const AttentionShape& shape, const KvCacheView& cache, int32_t layer,
                    float* out);

}  // namespace llm::cpu
