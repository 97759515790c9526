// RoPE + KV append, one token per task: rotate its q and k heads, then copy k and v into its slot.
#include "kernels/cpu/rope.h"

#include <cmath>
#include <cstring>

#include "kernels/cpu/rms_norm.h"
#include "kvcache/kv_layout.h"

namespace llm::cpu {

void RotateHalf(float* head, int32_t head_dim, int32_t position, const float* inv_freq,
                float attention_scaling) {
  const int32_t half = head_dim / 2;
  for (int32_t i = 0; i < half; ++i) {
    // The product is rounded to fp32 before cos/sin, matching transformers' fp32 `inv_freq @
    // position`.
    const float angle = static_cast<float>(position) * inv_freq[i];
    const float c = std::cos(angle) * attention_scaling;
    const float s = std::sin(angle) * attention_scaling;
    const float x1 = head[i];
    const float x2 = head[i + half];
    head[i] = x1 * c - x2 * s;
    head[i + half] = x2 * c + x1 * s;
  }
}

void RopeAppendKv(ThreadPool& pool, float* qkv, const AttentionBatch& batch,
                  const AttentionShape& shape, const RopeParams& rope, const KvCacheView& cache,
                  int32_t layer) {
  const int32_t head_dim = shape.head_dim;
  const int32_t num_heads_total = shape.num_q_heads + 2 * shape.num_kv_heads;
  const int64_t row_stride = static_cast<int64_t>(num_heads_total) * head_dim;
  const kvcache::KvLayout& layout = cache.layout;
  float* pool_base = static_cast<float*>(cache.pool);
  float* k_cache = pool_base + layout.layer_offset(layer, kvcache::KvKind::kKey);
  float* v_cache = pool_base + layout.layer_offset(layer, kvcache::KvKind::kValue);

  pool.ParallelFor(batch.num_tokens, 4, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float* row = qkv + t * row_stride;
      if (rope.row_scale.x != nullptr) {
        const float scale = RowScale(rope.row_scale, t);
        for (int64_t i = 0; i < row_stride; ++i) row[i] *= scale;
      }
      const int32_t position = batch.positions[t];
      // q heads then k heads are adjacent in the row, so one loop rotates both.
      for (int32_t h = 0; h < shape.num_q_heads + shape.num_kv_heads; ++h) {
        RotateHalf(row + static_cast<int64_t>(h) * head_dim, head_dim, position, rope.inv_freq,
                   rope.attention_scaling);
      }
      const float* k = row + static_cast<int64_t>(shape.num_q_heads) * head_dim;
      const float* v = k + static_cast<int64_t>(shape.num_kv_heads) * head_dim;
      const int32_t flat_slot = batch.slot_mapping[t];
      if (flat_slot < 0) continue;  // not appended (the backend contract)
      const int32_t block = flat_slot / layout.block_size;
      const int32_t slot = flat_slot % layout.block_size;
      for (int32_t kv_head = 0; kv_head < shape.num_kv_heads; ++kv_head) {
        const int64_t offset = layout.offset_in_layer(block, kv_head, slot, 0);
        std::memcpy(k_cache + offset, k + static_cast<int64_t>(kv_head) * head_dim,
                    head_dim * sizeof(float));
        std::memcpy(v_cache + offset, v + static_cast<int64_t>(kv_head) * head_dim,
                    head_dim * sizeof(float));
      }
    }
  });
}

}  // namespace llm::cpu
