// Paged attention reference: one (query token, kv head) pair per task; its query heads score every
// visible position tile by tile, take a two-pass softmax, then accumulate V column chunk by chunk.
#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kvcache/kv_layout.h"

namespace llm::cpu {
namespace {

// Dot product with eight independent partial sums: the compiler turns the inner loop into vector
// FMAs (a single running sum is a serial dependency chain it may not reorder under strict fp32).
float Dot(const float* a, const float* b, int32_t n) {
  float partial[8] = {};
  int32_t d = 0;
  for (; d + 8 <= n; d += 8) {
    for (int32_t j = 0; j < 8; ++j) partial[j] += a[d + j] * b[d + j];
  }
  float sum = 0.0f;
  for (; d < n; ++d) sum += a[d] * b[d];
  return sum + ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
         ((partial[4] + partial[5]) + (partial[6] + partial[7]));
}

}  // namespace

void PagedAttention(ThreadPool& pool, const float* qkv, const AttentionBatch& batch,
                    const AttentionShape& shape, const KvCacheView& cache, int32_t layer,
                    float* out) {
  const int32_t head_dim = shape.head_dim;
  const int32_t num_q_heads = shape.num_q_heads;
  const int32_t num_kv_heads = shape.num_kv_heads;
  const int32_t group_size = num_q_heads / num_kv_heads;
  const int64_t qkv_row_stride = static_cast<int64_t>(num_q_heads + 2 * num_kv_heads) * head_dim;
  const int64_t out_row_stride = static_cast<int64_t>(num_q_heads) * head_dim;
  const kvcache::KvLayout& layout = cache.layout;
  const int32_t block_size = layout.block_size;
  const float* pool_base = static_cast<const float*>(cache.pool);
  const float* k_cache = pool_base + layout.layer_offset(layer, kvcache::KvKind::kKey);
  const float* v_cache = pool_base + layout.layer_offset(layer, kvcache::KvKind::kValue);

  // Which sequence each query token belongs to, so tasks can be flat over (token, kv head).
  std::vector<int32_t> sequence_of_token(batch.num_tokens);
  for (int32_t s = 0; s < batch.num_seqs; ++s) {
    for (int32_t t = batch.query_start[s]; t < batch.query_start[s + 1]; ++t) {
      sequence_of_token[t] = s;
    }
  }

  const int64_t num_tasks = static_cast<int64_t>(batch.num_tokens) * num_kv_heads;
  pool.ParallelFor(num_tasks, 4, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;  // [group_size][num_visible]
    for (int64_t task = begin; task < end; ++task) {
      const int32_t t = static_cast<int32_t>(task / num_kv_heads);
      const int32_t kv_head = static_cast<int32_t>(task % num_kv_heads);
      const int32_t s = sequence_of_token[t];
      const int32_t* block_table =
          batch.block_tables + static_cast<int64_t>(s) * batch.block_table_stride;
      const int32_t num_visible = std::min(batch.positions[t] + 1, batch.kv_lens[s]);
      const int32_t first_head = kv_head * group_size;
      const float* q = qkv + t * qkv_row_stride + static_cast<int64_t>(first_head) * head_dim;
      float* o = out + t * out_row_stride + static_cast<int64_t>(first_head) * head_dim;
      std::fill(o, o + static_cast<int64_t>(group_size) * head_dim, 0.0f);
      if (num_visible <= 0) continue;

      // Visits every visible position as (position, K or V row), one page tile at a time.
      const auto for_each_position = [&](const float* kind_base, auto&& visit) {
        for (int32_t first = 0; first < num_visible; first += block_size) {
          const kvcache::PagedPosition page =
              kvcache::LocatePosition(block_table, block_size, first);
          const float* tile = kind_base + layout.tile_offset_in_layer(page.block, kv_head);
          const int32_t slots = std::min(block_size, num_visible - first);
          for (int32_t slot = 0; slot < slots; ++slot) visit(first + slot, tile + slot * head_dim);
        }
      };

      scores.resize(static_cast<size_t>(group_size) * num_visible);
      for_each_position(k_cache, [&](int32_t p, const float* k) {
        for (int32_t g = 0; g < group_size; ++g) {
          scores[static_cast<size_t>(g) * num_visible + p] =
              Dot(q + static_cast<int64_t>(g) * head_dim, k, head_dim) * shape.softmax_scale;
        }
      });
      for (int32_t g = 0; g < group_size; ++g) {
        float* row = &scores[static_cast<size_t>(g) * num_visible];
        const float max_score = *std::max_element(row, row + num_visible);
        float denominator = 0.0f;
        for (int32_t p = 0; p < num_visible; ++p) {
          row[p] = std::exp(row[p] - max_score);
          denominator += row[p];
        }
        const float inverse = 1.0f / denominator;
        for (int32_t p = 0; p < num_visible; ++p) row[p] *= inverse;
      }
      // Output columns in chunks of kColumns held in registers across all positions, so V rows
      // stream through while the partial outputs never leave the registers.
      constexpr int32_t kColumns = 16;
      for (int32_t g = 0; g < group_size; ++g) {
        const float* weights = &scores[static_cast<size_t>(g) * num_visible];
        float* o_head = o + static_cast<int64_t>(g) * head_dim;
        int32_t d0 = 0;
        for (; d0 + kColumns <= head_dim; d0 += kColumns) {
          float accumulator[kColumns] = {};
          for_each_position(v_cache, [&](int32_t p, const float* v) {
            for (int32_t j = 0; j < kColumns; ++j) accumulator[j] += weights[p] * v[d0 + j];
          });
          std::copy_n(accumulator, kColumns, o_head + d0);
        }
        for (; d0 < head_dim; ++d0) {
          float accumulator = 0.0f;
          for_each_position(v_cache,
                            [&](int32_t p, const float* v) { accumulator += weights[p] * v[d0]; });
          o_head[d0] = accumulator;
        }
      }
    }
  });
}

}  // namespace llm::cpu
