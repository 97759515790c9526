// Paged attention reference: one (query token, query head) pair per task, two passes over the
// sequence's visible KV positions (scores + max, then exp-weighted sum of V).
#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kvcache/kv_layout.h"

namespace llm::cpu {

void PagedAttention(ThreadPool& pool, const float* qkv, const AttentionBatch& batch,
                    const AttentionShape& shape, const KvCacheView& cache, int32_t layer,
                    float* out) {
  const int32_t head_dim = shape.head_dim;
  const int32_t num_q_heads = shape.num_q_heads;
  const int32_t group_size = num_q_heads / shape.num_kv_heads;
  const int64_t qkv_row_stride =
      static_cast<int64_t>(num_q_heads + 2 * shape.num_kv_heads) * head_dim;
  const int64_t out_row_stride = static_cast<int64_t>(num_q_heads) * head_dim;
  const kvcache::KvLayout& layout = cache.layout;
  const float* pool_base = static_cast<const float*>(cache.pool);
  const float* k_cache = pool_base + layout.layer_offset(layer, kvcache::KvKind::kKey);
  const float* v_cache = pool_base + layout.layer_offset(layer, kvcache::KvKind::kValue);

  // Which sequence each query token belongs to, so tasks can be flat over (token, head).
  std::vector<int32_t> sequence_of_token(batch.num_tokens);
  for (int32_t s = 0; s < batch.num_seqs; ++s) {
    for (int32_t t = batch.query_start[s]; t < batch.query_start[s + 1]; ++t)
      sequence_of_token[t] = s;
  }

  const int64_t num_tasks = static_cast<int64_t>(batch.num_tokens) * num_q_heads;
  pool.ParallelFor(num_tasks, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t task = begin; task < end; ++task) {
      const int32_t t = static_cast<int32_t>(task / num_q_heads);
      const int32_t h = static_cast<int32_t>(task % num_q_heads);
      const int32_t s = sequence_of_token[t];
      const int32_t kv_head = h / group_size;
      const int32_t* block_table =
          batch.block_tables + static_cast<int64_t>(s) * batch.block_table_stride;
      const int32_t num_visible = std::min(batch.positions[t] + 1, batch.kv_lens[s]);
      const float* q = qkv + t * qkv_row_stride + static_cast<int64_t>(h) * head_dim;
      float* o = out + t * out_row_stride + static_cast<int64_t>(h) * head_dim;
      std::fill(o, o + head_dim, 0.0f);
      if (num_visible <= 0) continue;

      scores.resize(num_visible);
      float max_score = -std::numeric_limits<float>::infinity();
      for (int32_t p = 0; p < num_visible; ++p) {
        const kvcache::PagedPosition where =
            kvcache::LocatePosition(block_table, layout.block_size, p);
        const float* k = k_cache + layout.offset_in_layer(where.block, kv_head, where.slot, 0);
        float dot = 0.0f;
        for (int32_t d = 0; d < head_dim; ++d) dot += q[d] * k[d];
        scores[p] = dot * shape.softmax_scale;
        max_score = std::max(max_score, scores[p]);
      }
      float denominator = 0.0f;
      for (int32_t p = 0; p < num_visible; ++p) {
        scores[p] = std::exp(scores[p] - max_score);
        denominator += scores[p];
      }
      for (int32_t p = 0; p < num_visible; ++p) {
        const kvcache::PagedPosition where =
            kvcache::LocatePosition(block_table, layout.block_size, p);
        const float* v = v_cache + layout.offset_in_layer(where.block, kv_head, where.slot, 0);
        const float weight = scores[p] / denominator;
        for (int32_t d = 0; d < head_dim; ++d) o[d] += weight * v[d];
      }
    }
  });
}

}  // namespace llm::cpu
